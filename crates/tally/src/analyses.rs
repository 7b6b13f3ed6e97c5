//! Behavioural analyses for the app (`GET /v1/analyses/{kind}`, `tally analyze`): the tenant's
//! [`Activity`] caught up from the `events` log, then one analysis over it.
//!
//! The state lives in the runtime, in memory: built from the whole retained log by the first
//! analysis after the tenant opens, then caught up by reading only the events after its
//! position before each analysis. Reading the log (not the ingest path) keeps ingest as fast
//! as without analyses, and gives every process of a shared store the same answers.

use tally_store::TenantStore;
use tally_views::analysis::{Activity, Analysis};
use tally_views::{ResultSet, StreamDef, TimeZone, Timestamp};

use crate::error::{Error, Result};
use crate::runtime::TenantRuntime;

/// Events read from the log per round trip.
const BATCH: usize = 20_000;

impl TenantRuntime {
    /// Runs analysis `kind` with `params` (name, value) as of `now`.
    pub fn analyze(
        &mut self,
        kind: &str,
        params: &[(String, String)],
        now: Timestamp,
    ) -> Result<ResultSet> {
        let analysis = Analysis::parse(kind, params, self.engine().tz(), now)?;
        let stream = self.events_stream()?;
        let tz = self.engine().tz().clone();
        let (store, slot) = self.store_and_activity();
        let activity = catch_up(store, slot, &stream, tz)?;
        if let Some((property, name)) = analysis.property_column()
            && !activity.has_property_column(property, name)
        {
            activity.add_property_column(property, name);
            let mut after = 0;
            while after < activity.position() {
                let batch = store.read_events(&stream, after, BATCH)?;
                let Some(last) = batch.last() else { break };
                after = last.seq;
                activity.fill_property_column(&batch);
            }
        }
        activity.settle();
        Ok(activity.run(&analysis))
    }

    /// The built-in `events` stream.
    fn events_stream(&self) -> Result<std::sync::Arc<StreamDef>> {
        self.catalog()
            .stream("events")
            .cloned()
            .ok_or_else(|| Error::NotFound("there is no events stream".into()))
    }

    /// Builds the analyses' state if there is none, and reads the `events` log after its
    /// position into it.
    pub(crate) fn catch_up_activity(&mut self) -> Result<&mut Activity> {
        let stream = self.events_stream()?;
        let tz = self.engine().tz().clone();
        let (store, slot) = self.store_and_activity();
        catch_up(store, slot, &stream, tz)
    }
}

/// The state in `slot` (built if there is none) with the log of `stream` after its position
/// read into it.
fn catch_up<'a>(
    store: &TenantStore,
    slot: &'a mut Option<Activity>,
    stream: &StreamDef,
    tz: TimeZone,
) -> Result<&'a mut Activity> {
    let activity = slot.get_or_insert_with(|| Activity::new(stream, tz));
    loop {
        let batch = store.read_events(stream, activity.position(), BATCH)?;
        if batch.is_empty() {
            break;
        }
        activity.absorb(&batch);
    }
    Ok(activity)
}
