//! What a sink remembers, and who may change it: the manifest of deliveries and the
//! journal that feeds it, the lease that makes one writer per history, the plans that
//! `ferry plan` stores and the shard reports that `ferry report` adds up.

pub mod journal;
pub mod lease;
pub mod manifest;
pub mod plans;
pub mod shard_reports;
