//! Scheduled operation: one pass over every site of the config (`probe run`), each probed with
//! in-run retries, its verdict stepped through the alert state machine, the whole run stored in
//! one transaction with the mail it decided, and the outbox flushed. The state lives in the store,
//! so running this every minute from cron never repeats an alert.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::alert::{self, RunVerdict};
use crate::cli::{OutputFormat, ProbeSettings};
use crate::config::{Config, Site};
use crate::diagnose::DiagnoseSettings;
use crate::engine::{probe_site, ProbeError};
use crate::mail;
use crate::observe::{ProbeReport, Status};
use crate::resolve::Nameserver;
use crate::store::{RunRecord, Store, StoreError};

/// Sites probed at once in one pass.
const CONCURRENCY: usize = 32;

/// Why a pass could not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one pass did, per site.
#[derive(Debug)]
pub struct PassOutcome {
    pub sites: Vec<(String, ProbeReport)>,
    pub mails_sent: usize,
    pub mails_waiting: usize,
}

impl PassOutcome {
    /// The worst status over all sites (the exit code of `probe run`).
    pub fn worst(&self) -> Status {
        self.sites
            .iter()
            .map(|(_, r)| r.status)
            .max()
            .unwrap_or(Status::Ok)
    }
}

fn settings_for(site: &Site, config: &Config) -> ProbeSettings {
    ProbeSettings {
        target: site.target.clone(),
        origins: site.origins.clone(),
        edge: site.edge,
        static_path: site.static_path.clone(),
        nameserver: Nameserver::System,
        extra_roots: config.extra_roots.clone(),
        timeout: site.timeout,
        samples: 1,
        output: OutputFormat::Json,
        diagnose: DiagnoseSettings {
            cert_warning_days: i64::from(site.cert_warning_days),
            expect_status: site.expect_status.clone(),
            ..DiagnoseSettings::default()
        },
    }
}

/// Probes a site; while it is down, tries again (up to `confirm_retries` times, `retry_spacing`
/// apart) so one lost packet does not count as a failure.
async fn probe_confirmed(site: &Site, config: &Config) -> Result<ProbeReport, ProbeError> {
    let settings = settings_for(site, config);
    let mut report = probe_site(&settings).await?;
    for _ in 0..config.alerts.confirm_retries {
        if report.status != Status::Down {
            break;
        }
        tokio::time::sleep(config.alerts.retry_spacing).await;
        report = probe_site(&settings).await?;
    }
    Ok(report)
}

/// One pass over every site; `now` stamps the run (a parameter so tests can compress time).
pub async fn run_once(
    config: &Config,
    store: &mut dyn Store,
    now: OffsetDateTime,
) -> Result<PassOutcome, ScheduleError> {
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let config_shared = Arc::new(config.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (index, site) in config.sites.iter().enumerate() {
        let (limit, config, site) = (limit.clone(), config_shared.clone(), site.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (index, probe_confirmed(&site, &config).await)
        });
    }
    let mut reports = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => reports.push((index, result?)),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    reports.sort_by_key(|(index, _)| *index);

    let mut sites = Vec::new();
    for (index, report) in reports {
        let site = &config.sites[index];
        let state = store.alert_state(&site.name)?;
        let verdict = RunVerdict {
            at: now,
            diagnosis: report.diagnosis.clone(),
            in_maintenance: config.maintenance.iter().any(|w| {
                w.start <= now
                    && now < w.end
                    && (w.sites.is_empty() || w.sites.contains(&site.name))
            }),
        };
        let (next, notifications) = alert::step(&state, &verdict, &config.alerts);
        let messages: Vec<_> = if site.alert_to.is_empty() {
            Vec::new()
        } else {
            notifications
                .iter()
                .map(|n| mail::render(&site.name, &site.target.url, n, &site.alert_to))
                .collect()
        };
        store.record_run(&RunRecord {
            site: &site.name,
            at: now,
            report: &report,
            state: &next,
            messages: &messages,
        })?;
        sites.push((site.name.clone(), report));
    }

    let (mut mails_sent, mut mails_waiting) = (0, 0);
    if let Some(smtp) = &config.smtp {
        let summary = mail::flush_outbox(store, smtp, now).await?;
        mails_sent = summary.sent;
        mails_waiting = summary.failed + summary.deferred;
    }
    let before = now - config.retention;
    store.prune_results(before)?;
    Ok(PassOutcome {
        sites,
        mails_sent,
        mails_waiting,
    })
}
