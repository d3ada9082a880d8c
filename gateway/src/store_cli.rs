//! `portico store list|get|delete`: reading and repairing `data_dir/store.redb` without a
//! running gateway (the store is locked while one runs).
//!
//! The gateway starts even when a stored object no longer loads (it is left out and
//! logged with its key); this is how an operator looks at such an object and removes it
//! when the admin API cannot, for instance a record that does not decode at all.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::store::{DiskStore, Record};

/// One `portico store` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCommand {
    /// Every key: its indexes and size, or why it does not decode.
    List,
    /// One record, as stored (pretty JSON), or its raw bytes when it does not decode.
    Get(String),
    /// Removes one record.
    Delete(String),
}

/// Runs `command` on the store in `data_dir`; the text to print, or the error.
pub fn run(data_dir: &Path, command: &StoreCommand) -> Result<String, String> {
    let disk = DiskStore::open_existing(data_dir).map_err(|e| e.to_string())?;
    match command {
        StoreCommand::List => {
            let mut out = String::new();
            for (key, bytes) in disk.raw_records().map_err(|e| e.to_string())? {
                match serde_json::from_slice::<Record>(&bytes) {
                    Ok(r) => writeln!(
                        out,
                        "{key}\tcreatedIndex={}\tmodifiedIndex={}\t{} bytes",
                        r.created_index,
                        r.modified_index,
                        bytes.len()
                    ),
                    Err(e) => writeln!(out, "{key}\tunreadable: {e}\t{} bytes", bytes.len()),
                }
                .map_err(|e| e.to_string())?;
            }
            Ok(out)
        }
        StoreCommand::Get(key) => {
            let records = disk.raw_records().map_err(|e| e.to_string())?;
            let (_, bytes) = records
                .into_iter()
                .find(|(k, _)| k == key)
                .ok_or_else(|| format!("no record `{key}`"))?;
            // Printed through `Value` only when it parses: the depth limit of a parse is
            // what may make a record unreadable, so such a one is printed as stored.
            Ok(match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => serde_json::to_string_pretty(&v).map_err(|e| e.to_string())? + "\n",
                Err(_) => String::from_utf8_lossy(&bytes).into_owned() + "\n",
            })
        }
        StoreCommand::Delete(key) => {
            if disk.remove_key(key).map_err(|e| e.to_string())? {
                Ok(format!("deleted {key}\n"))
            } else {
                Err(format!("no record `{key}`"))
            }
        }
    }
}
