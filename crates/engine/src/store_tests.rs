//! Tests of the history store: records, retention, recovery.

use super::*;

fn record(id: JobId, state: RecordState, submitted_ms: u64, log_bytes: u64) -> JobRecord {
    let header = LogHeader {
        id,
        argv: vec![ByteBuf::from(b"true".to_vec())],
        cwd: None,
        owner: "test".into(),
        dialect: "ferry".into(),
        submitted_ms,
        principal: Principal::Owner,
        on_client_fds: false,
    };
    JobRecord {
        log_bytes,
        recipe: Some(Recipe {
            group: Some("g".into()),
            after: vec![3],
            ..Recipe::default()
        }),
        ..JobRecord::from_header(&header, state)
    }
}

#[test]
fn retention_reads_its_fields_as_the_whole_record_has_them() {
    let mut r = record(7, RecordState::Lost, 5, 9);
    r.recipe = Some(Recipe {
        env: Some(vec![(
            ByteBuf::from(b"A".to_vec()),
            ByteBuf::from(b"1".to_vec()),
        )]),
        ..Recipe::default()
    });
    let view: RetentionView = ciborium::de::from_reader(r.encode().as_slice()).expect("view");
    assert_eq!(
        (view.submitted_ms, view.state, view.log_bytes),
        (5, RecordState::Lost, 9)
    );
}

#[test]
fn records_roundtrip_and_older_fields_default() {
    let r = record(7, RecordState::Finished, 5, 9);
    assert_eq!(JobRecord::decode(&r.encode()).expect("decode"), r);
    // A map with only the first fields (as an older writer would leave) still reads.
    #[derive(Serialize)]
    struct Minimal {
        id: u64,
        argv: Vec<ByteBuf>,
        submitted_ms: u64,
        state: RecordState,
    }
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(
        &Minimal {
            id: 3,
            argv: vec![],
            submitted_ms: 1,
            state: RecordState::Lost,
        },
        &mut bytes,
    )
    .expect("encode");
    let read = JobRecord::decode(&bytes).expect("decode");
    assert_eq!(read.id, 3);
    assert_eq!(read.state, RecordState::Lost);
    assert_eq!(read.exit, None);
}

/// A store in `dir` whose retention keeps 100 jobs (of any size and age).
fn store_keeping_100(dir: &std::path::Path, on_removed: OnRemoved) -> Store {
    Store::open(
        dir,
        dir,
        Retention {
            max_jobs: 100,
            max_output: u64::MAX,
            max_age: None,
        },
        on_removed,
        Default::default(),
    )
    .expect("open")
}

#[test]
fn retention_removes_the_oldest_ended_jobs_by_count_size_and_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let removed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&removed);
    let store = store_keeping_100(
        dir.path(),
        Box::new(move |ids| seen.lock().expect("lock").extend_from_slice(ids)),
    );
    let now = millis(SystemTime::now());
    let records: Vec<JobRecord> = (1..=6)
        .map(|id| record(id, RecordState::Finished, now - (10 - id) * 3_600_000, 100))
        .chain([record(7, RecordState::Running, now, 0)])
        .collect();
    store.put_now(&records).expect("put");
    // By age: jobs 1..=3 were submitted 7 hours ago or more.
    let pruned = store
        .prune(Some(Duration::from_secs(6 * 3600 + 1800)), None)
        .expect("prune");
    assert_eq!(
        pruned,
        Pruned {
            jobs: 3,
            bytes: 300
        }
    );
    // By count: keep the newest 2 ended jobs; the running one is never touched.
    let pruned = store.prune(None, Some(2)).expect("prune");
    assert_eq!(pruned.jobs, 1);
    let left: Vec<JobId> = store.all().expect("all").into_keys().collect();
    assert_eq!(left, vec![5, 6, 7]);
    assert_eq!(*removed.lock().expect("lock"), vec![1, 2, 3, 4]);
}

#[test]
fn retention_sees_the_jobs_committed_after_its_first_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_keeping_100(dir.path(), Box::new(|_| {}));
    let now = millis(SystemTime::now());
    store
        .put_now(&[
            record(1, RecordState::Finished, now, 10),
            record(2, RecordState::Running, now, 0),
        ])
        .expect("put");
    // The first pass reads the history: job 1 is the only ended one.
    assert_eq!(store.prune(None, Some(1)).expect("prune").jobs, 0);
    // Then through the store thread: job 2 ends, jobs 3 and 4 run and end.
    for (id, state) in [
        (2, RecordState::Finished),
        (3, RecordState::Running),
        (3, RecordState::Finished),
        (4, RecordState::Lost),
        (5, RecordState::Running),
    ] {
        store.put(record(id, state, now, 10), None);
        store.flush();
    }
    // Four ended jobs now (1..=4), keep the newest one; job 5 runs and stays.
    let pruned = store.prune(None, Some(1)).expect("prune");
    assert_eq!(pruned, Pruned { jobs: 3, bytes: 30 });
    let left: Vec<JobId> = store.all().expect("all").into_keys().collect();
    assert_eq!(left, vec![4, 5]);
    // What was removed is gone from what retention knows too: nothing more to remove.
    assert_eq!(store.prune(None, Some(1)).expect("prune").jobs, 0);
}
