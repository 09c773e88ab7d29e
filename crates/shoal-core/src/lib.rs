//! shoal's shared vocabulary: the data model (tests, attempts, outcomes), the
//! one [`Event`] type that feeds every reporter and store, and the config
//! schema. No I/O happens here.

pub mod config;
pub mod environment;
pub mod event;
pub mod model;
pub mod settings;

pub use event::{EVENT_SCHEMA_VERSION, Event};
pub use model::*;
pub use settings::RunSettings;
