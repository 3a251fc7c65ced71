//! Remote actions on a remote-execution cluster (the Remote Execution API v2: BuildGrid,
//! Buildbarn, NativeLink, BuildBuddy, EngFlow...). Each action becomes a REAPI Action: the
//! command `sh -c ACTION` with a fixed environment ([`ENVIRONMENT`]), in the working directory
//! `work` of an input root that holds the action's `requires` files, with `work` itself
//! declared as the output directory (the empty output path), so that the files the command
//! makes or changes come back as with the pool: whatever in the output tree differs from the
//! inputs is written into the Rakefile's directory.
//!
//! The action cache is asked first (a result with exit 0 is used as is; `--no-cache` skips the
//! lookup and sets `do_not_cache`); then the missing blobs are uploaded and the action is
//! executed, its operation followed (and resumed with WaitExecution when the stream drops).
//! A FAILED_PRECONDITION (blobs missing after all), or an operation the server lost (it
//! restarted while the action ran), uploads again and executes anew, once. stdout and
//! stderr come at the end (REAPI has no live output without a LogStream service).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ferry_client::{JobExit, Stream};
use ferry_rake::Action;
use ferry_reapi::proto::{command, platform, Action as ReAction, Command, Platform, Tree};
use ferry_reapi::{files_of_tree, Blob, Cluster, ClusterError, Connection, InputRoot, Progress};

use super::output::{note, Printer};
use crate::landing::{refused_files, Landing, Refused};

/// The action's working directory inside its input root (and its output directory).
pub const WORKDIR: &str = "work";

/// The environment every action runs with (sorted by name, as REAPI asks): the cluster's
/// machines are not the client's, so nothing of the client's environment goes.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("HOME", "/tmp"),
    ("LANG", "C.UTF-8"),
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
];

/// A cluster and how actions go to it.
pub struct Backend {
    /// The connection (after GetCapabilities).
    pub cluster: Cluster,
    /// Platform properties, sorted by name then value.
    platform: Vec<(String, String)>,
    /// `--no-cache`.
    no_cache: bool,
    /// Each action's time limit.
    timeout: Duration,
    /// Operations in flight, cancelled on Ctrl-C.
    operations: Mutex<HashSet<String>>,
}

/// What one action on the cluster came to.
pub struct Ran {
    /// How it ended.
    pub exit: JobExit,
    /// Bytes uploaded.
    pub sent: u64,
    /// Bytes of results written.
    pub received: u64,
    /// Its result came from the action cache.
    pub cached: bool,
}

impl Backend {
    /// Connects to the cluster.
    pub async fn connect(
        connection: &Connection,
        platform: &[String],
        no_cache: bool,
        timeout: Duration,
    ) -> Result<Backend> {
        let mut properties = Vec::new();
        for property in platform {
            let (name, value) = property
                .split_once('=')
                .ok_or_else(|| anyhow!("--platform {property:?}: KEY=VALUE expected"))?;
            properties.push((name.to_owned(), value.to_owned()));
        }
        properties.sort();
        let cluster = Cluster::connect(connection).await?;
        Ok(Backend {
            cluster,
            platform: properties,
            no_cache,
            timeout,
            operations: Mutex::default(),
        })
    }

    /// Cancels every operation in flight (Ctrl-C); how many.
    pub async fn cancel_all(&self) -> usize {
        let names: Vec<String> = self
            .operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for name in &names {
            let cancelled =
                tokio::time::timeout(Duration::from_secs(5), self.cluster.cancel(name)).await;
            match cancelled {
                Ok(Ok(())) => {}
                Ok(Err(e)) => note(&format!("ferry: rake: cannot cancel {name}: {e}")),
                Err(_) => note(&format!("ferry: rake: cancelling {name} took too long")),
            }
        }
        names.len()
    }

    fn operations(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.operations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Command and the Action of `action` over `root`. The output directory and the
    /// Command's platform are the fields that REAPI 2.1 and 2.2 deprecated: servers of every
    /// version read them (`output_paths` has no form for "the whole working directory"), and
    /// the Action's platform is set too for the newer ones.
    #[allow(deprecated)]
    fn describe(&self, command_line: &str, root: &InputRoot) -> (Blob, Blob) {
        let platform = (!self.platform.is_empty()).then(|| Platform {
            properties: self
                .platform
                .iter()
                .map(|(name, value)| platform::Property {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        });
        let command = Command {
            arguments: vec!["sh".into(), "-c".into(), command_line.into()],
            environment_variables: ENVIRONMENT
                .iter()
                .map(|(name, value)| command::EnvironmentVariable {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            // The empty path: the whole working directory (outputs and inputs).
            output_directories: vec![String::new()],
            working_directory: WORKDIR.into(),
            platform: platform.clone(),
            ..Command::default()
        };
        let command = Blob::message(&command);
        let action = ReAction {
            command_digest: Some(command.digest.clone()),
            input_root_digest: Some(root.digest.clone()),
            timeout: Some(ferry_reapi::Duration {
                seconds: i64::try_from(self.timeout.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            do_not_cache: self.no_cache,
            platform,
            ..ReAction::default()
        };
        (command, Blob::message(&action))
    }

    /// Runs `action` on the cluster (its requirements read from `dir`), its output to
    /// `printer`, its results into `landing`.
    pub async fn run(
        &self,
        dir: &std::path::Path,
        landing: &Landing,
        action: &Action,
        printer: &mut Printer,
    ) -> Result<Ran> {
        let root = {
            let (dir, requires) = (dir.to_owned(), action.requires.clone());
            tokio::task::spawn_blocking(move || InputRoot::build(&dir, &requires, WORKDIR))
                .await
                .context("hashing the requirements")??
        };
        let (command_blob, action_blob) = self.describe(&action.command, &root);
        let action_digest = action_blob.digest.clone();
        let mut blobs = root.blobs.clone();
        blobs.push(command_blob);
        blobs.push(action_blob);
        let cached = if self.no_cache {
            None
        } else {
            // Only a success is taken from the cache, as Bazel does.
            self.cluster
                .cached_result(&action_digest)
                .await?
                .filter(|result| result.exit_code == 0)
        };
        let (result, cached, sent) = match cached {
            Some(result) => (result, true, 0),
            None => {
                let mut sent = self.cluster.upload_missing(&blobs).await?;
                let executed = match self.execute(action, &action_digest).await {
                    Err(e) if e.is_failed_precondition() || e.is_operation_lost() => {
                        note(&format!(
                            "ferry: rake: `{}`: {e}: uploading the inputs again and executing anew",
                            action.command
                        ));
                        sent += self.cluster.upload_missing(&blobs).await?;
                        self.execute(action, &action_digest).await?
                    }
                    other => other?,
                };
                (executed.result, executed.cached, sent)
            }
        };
        for (stream, raw, digest) in [
            (Stream::Stdout, &result.stdout_raw, &result.stdout_digest),
            (Stream::Stderr, &result.stderr_raw, &result.stderr_digest),
        ] {
            let data = match digest {
                Some(digest) if raw.is_empty() && digest.size_bytes > 0 => self
                    .cluster
                    .read_blobs(std::slice::from_ref(digest))
                    .await?
                    .remove(&digest.hash)
                    .unwrap_or_default(),
                _ => raw.clone(),
            };
            printer.write(stream, &data);
        }
        printer.finish();
        let received = self.fetch_outputs(landing, &root, &result).await?;
        Ok(Ran {
            exit: JobExit::reported(result.exit_code),
            sent,
            received,
            cached,
        })
    }

    /// Executes, keeping the operation's name while it runs (for Ctrl-C).
    async fn execute(
        &self,
        action: &Action,
        digest: &ferry_reapi::proto::Digest,
    ) -> Result<ferry_reapi::Executed, ClusterError> {
        let (events, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let executing = self.cluster.execute(digest, self.no_cache, events);
        tokio::pin!(executing);
        let mut name = None;
        let executed = loop {
            tokio::select! {
                executed = &mut executing => break executed,
                Some(progress) = heard.recv() => self.hear(&action.command, &mut name, progress),
            }
        };
        while let Ok(progress) = heard.try_recv() {
            self.hear(&action.command, &mut name, progress);
        }
        if let Some(name) = name {
            self.operations().remove(&name);
        }
        executed
    }

    /// Takes note of an operation's progress: its name (kept for Ctrl-C), a resumption.
    fn hear(&self, command: &str, name: &mut Option<String>, progress: Progress) {
        match progress {
            Progress::Named(operation) => {
                self.operations().insert(operation.clone());
                *name = Some(operation);
            }
            Progress::Resuming(why) => note(&format!(
                "ferry: rake: `{command}`: the Execute stream dropped ({why}): resuming with WaitExecution"
            )),
            Progress::Stage(_) => {}
        }
    }

    /// Writes the files of the result that differ from the inputs into `landing`; the bytes.
    /// Only the declared output (the working directory, path "") is taken: any other output
    /// a result names, and any name that may not land, fails the action with every such name.
    async fn fetch_outputs(
        &self,
        landing: &Landing,
        root: &InputRoot,
        result: &ferry_reapi::proto::ActionResult,
    ) -> Result<u64> {
        let mut refused = Vec::new();
        let undeclared = |name: &str| Refused {
            name: name.to_owned(),
            problem: "is not an output the action declared (only its working directory is)".into(),
        };
        // path (relative to the working directory) -> (digest, executable)
        let mut outputs = BTreeMap::new();
        for directory in &result.output_directories {
            if !directory.path.is_empty() {
                refused.push(undeclared(&directory.path));
                continue;
            }
            let Some(tree_digest) = &directory.tree_digest else {
                continue;
            };
            let mut blobs = self
                .cluster
                .read_blobs(std::slice::from_ref(tree_digest))
                .await?;
            let bytes = blobs.remove(&tree_digest.hash).unwrap_or_default();
            let tree: Tree = prost::Message::decode(bytes.as_slice()).map_err(|e| {
                anyhow!("the cluster sent an output tree that does not decode: {e}")
            })?;
            let files = files_of_tree(&tree)
                .map_err(|e| anyhow!("the cluster sent an output tree that may not land: {e}"))?;
            for file in files {
                outputs.insert(file.path, (file.digest, file.executable));
            }
        }
        refused.extend(
            result
                .output_files
                .iter()
                .map(|file| undeclared(&file.path)),
        );
        outputs.retain(|path, (digest, _)| root.files.get(path) != Some(digest));
        // Every name is checked before any content is asked for.
        outputs.retain(|path, _| match landing.check(path.as_bytes()) {
            Ok(_) => true,
            Err(refusal) => {
                refused.push(refusal);
                false
            }
        });
        let digests: Vec<_> = outputs.values().map(|(d, _)| d.clone()).collect();
        let contents = self.cluster.read_blobs(&digests).await?;
        let mut received = 0;
        for (path, (digest, executable)) in outputs {
            let data = contents
                .get(&digest.hash)
                .ok_or_else(|| anyhow!("the cluster did not send {path}"))?;
            // The wire says which files are executable (`is_executable`).
            let mode = if executable { 0o755 } else { 0o644 };
            match landing.write(path.as_bytes(), data, mode) {
                Ok(()) => received += data.len() as u64,
                Err(refusal) => refused.push(refusal),
            }
        }
        if !refused.is_empty() {
            bail!("{}", refused_files(&refused));
        }
        Ok(received)
    }
}

/// The connection a `reapi://HOST:PORT[/INSTANCE]` (or `reapis://`) Rakefile line names.
pub fn connection_of_rakefile(url: &str) -> Connection {
    let (tls, rest) = match url.strip_prefix("reapis://") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("reapi://").unwrap_or(url)),
    };
    let (authority, instance) = rest.split_once('/').unwrap_or((rest, ""));
    Connection {
        url: format!("{}://{authority}", if tls { "grpcs" } else { "grpc" }),
        instance: instance.to_owned(),
        ..Connection::default()
    }
}
