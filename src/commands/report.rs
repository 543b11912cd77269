//! `ferry report SINK`: every shard's report at the sink, added up (the reports' format is
//! in [`crate::history::shard_reports`]). It runs no stages: it reads and adds.

use super::{execute, Command, Ended, Finished, Session, Settings};
use crate::error::{ExitCode, FerryError};
use crate::history::shard_reports::Combined;
use crate::pipeline::{CancelToken, Pipeline};
use crate::sink::{self, SinkOptions, SinkSpec};

/// What `ferry report` is asked to do.
#[derive(Debug, Clone)]
pub struct Report {
    /// The sink the shards delivered into.
    pub sink: SinkSpec,
    /// `--json`: print the combined report as JSON on stdout instead of text.
    pub json: bool,
    /// How it shows itself and when it gives up.
    pub settings: Settings,
}

/// What `ferry report` found: the shards' reports, added up.
#[derive(Debug)]
pub struct Reported {
    /// The combined report.
    pub combined: Combined,
    /// Printed as JSON on stdout instead of text.
    pub json: bool,
}

/// Reads and adds up every shard's report at the sink.
///
/// # Errors
/// [`FerryError::Usage`] when there is none, [`FerryError::History`] when one is
/// damaged, [`FerryError::Sink`] when the sink fails.
pub fn report(r: &Report, cancel: CancelToken) -> Result<Reported, FerryError> {
    execute(r, cancel)
}

impl Command for Report {
    type Opened = Combined;
    type Collected = ();
    type Done = Reported;

    fn settings(&self) -> Settings {
        self.settings
    }

    fn open(&self, s: &Session) -> Result<Combined, FerryError> {
        let options = SinkOptions {
            read_only: true,
            cancel: s.cancel.clone(),
            ..SinkOptions::default()
        };
        let sink = sink::open(&self.sink, &options)?;
        Combined::read(sink.as_ref())
    }

    fn build(&self, _: &mut Combined, _: &mut Pipeline, _: &Session) -> Result<(), FerryError> {
        Ok(())
    }

    fn finish(
        &self,
        combined: Combined,
        (): (),
        _: Ended,
        _: &Session,
    ) -> Result<Reported, FerryError> {
        Ok(Reported {
            combined,
            json: self.json,
        })
    }
}

impl Finished for Reported {
    /// Nothing on stderr: the report itself is what `ferry report` prints, on stdout.
    fn render_text(&self) -> String {
        String::new()
    }

    fn to_json(&self) -> String {
        self.combined.to_json()
    }

    fn exit_code(&self) -> ExitCode {
        self.combined.exit_code()
    }

    /// The combined report, as text or (`--json`) as JSON.
    fn stdout(&self) -> Option<String> {
        Some(match self.json {
            true => self.combined.to_json(),
            false => self.combined.render_text().trim_end().to_string(),
        })
    }
}
