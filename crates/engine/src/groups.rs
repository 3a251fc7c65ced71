//! The job groups' part of the history store: each group's limit and whether it is paused,
//! in a table of its own (`groups`, name to a CBOR map), written at once when a group
//! changes (groups change rarely), so that a restarted daemon has the same groups.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");

/// A group as the store keeps it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupRecord {
    /// Jobs of the group that may run at once.
    pub parallel: u64,
    /// Whether it is paused.
    #[serde(default)]
    pub paused: bool,
}

fn db_error(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

/// Every stored group, by name.
pub fn load(db: &Database) -> Result<Vec<(String, GroupRecord)>, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let table = match txn.open_table(GROUPS) {
        Ok(table) => table,
        // No group was ever stored.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(db_error(e)),
    };
    let mut groups = Vec::new();
    for entry in table.iter().map_err(db_error)? {
        let (name, bytes) = entry.map_err(db_error)?;
        match ciborium::de::from_reader::<GroupRecord, _>(bytes.value()) {
            Ok(record) => groups.push((name.value().to_owned(), record)),
            Err(e) => tracing::warn!(group = name.value(), "skipping a damaged group: {e}"),
        }
    }
    Ok(groups)
}

/// Stores a group, or with `None` removes it; committed before it returns.
pub fn save(db: &Database, name: &str, group: Option<GroupRecord>) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(db_error)?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(db_error)?;
    {
        let mut table = txn.open_table(GROUPS).map_err(db_error)?;
        match group {
            Some(group) => {
                let mut bytes = Vec::new();
                // Serializing plain data into a Vec cannot fail.
                let _ = ciborium::ser::into_writer(&group, &mut bytes);
                table.insert(name, bytes.as_slice()).map_err(db_error)?;
            }
            None => {
                table.remove(name).map_err(db_error)?;
            }
        }
    }
    txn.commit().map_err(db_error)
}
