//! One module per command. Each returns the process exit code or a [`Failure`].

pub mod audit;
pub mod build;
pub mod cache;
pub mod config;
pub mod diff;
pub mod docs;
pub mod export;
pub mod graph;
pub mod plan_report;
pub mod provenance;
pub mod realize;
pub mod saved_plan;
pub mod store;
pub mod target;
pub mod why;

pub use failure::Failure;

mod failure {
    use crate::build::EngineError;

    /// A command that failed: the report to print and the exit code.
    pub struct Failure {
        /// Exit code: 1 user error, 2 infrastructure error.
        pub code: u8,
        /// What to print.
        pub report: miette::Report,
    }

    impl From<EngineError> for Failure {
        fn from(e: EngineError) -> Self {
            Self {
                code: e.exit_code() as u8,
                report: miette::Report::new(e),
            }
        }
    }

    impl From<kiln_store::StoreError> for Failure {
        fn from(e: kiln_store::StoreError) -> Self {
            EngineError::Store(e).into()
        }
    }
}
