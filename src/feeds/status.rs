//! `status.json` in the shape of Statuspage's v2 `summary.json` (page, status, components,
//! incidents, scheduled_maintenances), so status-page consumers and aggregators read it
//! unchanged. Each component also carries our diagnosis and uptime under `probe`.

use serde_json::{json, Value};

use super::{FeedSnapshot, SiteFeed, WINDOWS};
use crate::alert::Severity;
use crate::diagnose::Cause;
use crate::observe::Status;
use crate::text::{rfc3339, short_id};

/// A Statuspage component status, least severe first (so the worst of several is their `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ComponentStatus {
    Operational,
    UnderMaintenance,
    DegradedPerformance,
    PartialOutage,
    MajorOutage,
}

impl ComponentStatus {
    /// Statuspage's name for it.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ComponentStatus::Operational => "operational",
            ComponentStatus::UnderMaintenance => "under_maintenance",
            ComponentStatus::DegradedPerformance => "degraded_performance",
            ComponentStatus::PartialOutage => "partial_outage",
            ComponentStatus::MajorOutage => "major_outage",
        }
    }
}

/// A site's component status: its latest verdict, read with its open incident. An open
/// intermittent incident is a partial outage even between failures; an open warning (the site
/// degraded, visitors still served) is degraded performance, unless the latest run saw worse
/// (down, or failing from a region).
pub(super) fn component_status(site: &SiteFeed) -> ComponentStatus {
    if site.in_maintenance {
        return ComponentStatus::UnderMaintenance;
    }
    let latest = latest_status(site);
    let regional = site
        .latest
        .as_ref()
        .is_some_and(|l| l.diagnosis.summary.starts_with("regional:"));
    match site.open_lighter {
        Some(Severity::Intermittent) => latest.max(ComponentStatus::PartialOutage),
        Some(Severity::Warning) if latest != ComponentStatus::MajorOutage && !regional => {
            ComponentStatus::DegradedPerformance
        }
        _ => latest,
    }
}

fn latest_status(site: &SiteFeed) -> ComponentStatus {
    match site
        .latest
        .as_ref()
        .map(|l| (l.diagnosis.status, l.diagnosis.cause))
    {
        None => ComponentStatus::Operational,
        Some((Status::Ok, _)) => ComponentStatus::Operational,
        // Working but slow or a certificate close to expiry: performance, not an outage.
        Some((Status::Degraded, Cause::Slow | Cause::CertExpiring)) => {
            ComponentStatus::DegradedPerformance
        }
        Some((Status::Degraded | Status::Unknown, _)) => ComponentStatus::PartialOutage,
        Some((Status::Down, _)) => ComponentStatus::MajorOutage,
    }
}

/// The page's overall indicator and its description, from the components (Statuspage's words:
/// the page's banner says the same).
pub(super) fn indicator(sites: &[SiteFeed]) -> (&'static str, &'static str) {
    use ComponentStatus as C;
    let statuses: Vec<C> = sites.iter().map(component_status).collect();
    let count = |s: C| statuses.iter().filter(|x| **x == s).count();
    if !statuses.is_empty() && count(C::MajorOutage) == statuses.len() {
        ("critical", "Major System Outage")
    } else if count(C::MajorOutage) > 0 {
        ("major", "Partial System Outage")
    } else if count(C::PartialOutage) > 0 {
        ("minor", "Partial System Outage")
    } else if count(C::DegradedPerformance) > 0 {
        ("minor", "Degraded System Service")
    } else if count(C::UnderMaintenance) > 0 {
        ("maintenance", "Service Under Maintenance")
    } else {
        ("none", "All Systems Operational")
    }
}

/// The page object every v2 document starts with, and the page's id.
fn page(snapshot: &FeedSnapshot) -> (Value, String) {
    let page_id = short_id(&snapshot.title);
    let page = json!({
        "id": page_id,
        "name": snapshot.title,
        // Statuspage always has a URL; consumers that expect a string get an empty one.
        "url": snapshot.url.clone().unwrap_or_default(),
        "time_zone": snapshot.zone.name(),
        "updated_at": rfc3339(snapshot.generated_at),
    });
    (page, page_id)
}

/// status.json (and `api/v2/summary.json`), written into `out` as it is made.
pub(super) fn summary(snapshot: &FeedSnapshot, out: &mut dyn std::fmt::Write) {
    let (page, page_id) = page(snapshot);
    let (indicator, description) = indicator(&snapshot.sites);
    let status = json!({ "indicator": indicator, "description": description });
    // Written into the output as they are made: with thousands of sites, the components alone
    // are megabytes, and neither a tree of them all nor a second copy of their text is held.
    let _ = write!(
        out,
        "{{\"page\":{},\"status\":{status},\"components\":[",
        crate::text::json(&page)
    );
    write_components(snapshot, &page_id, out);
    // summary.json lists the unresolved incidents only.
    let _ = out.write_str("],\"incidents\":");
    write_incidents(snapshot, &page_id, true, out);
    let _ = out.write_str(",\"scheduled_maintenances\":");
    let _ = out.write_str(&crate::text::json(&maintenances(snapshot, &page_id, None)));
    let _ = out.write_str("}\n");
}

/// One of Statuspage's public v2 documents other than the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2 {
    /// `status.json`: the page and its indicator.
    Status,
    /// `components.json`.
    Components,
    /// `incidents.json`: the 50 most recent, resolved ones included.
    Incidents,
    /// `incidents/unresolved.json`.
    UnresolvedIncidents,
    /// `scheduled-maintenances.json`, `/upcoming.json`, `/active.json`.
    Maintenances(Option<&'static str>),
}

impl V2 {
    /// Every document, with its path under `api/v2/`.
    pub const ALL: [(V2, &'static str); 7] = [
        (V2::Status, "status.json"),
        (V2::Components, "components.json"),
        (V2::Incidents, "incidents.json"),
        (V2::UnresolvedIncidents, "incidents/unresolved.json"),
        (V2::Maintenances(None), "scheduled-maintenances.json"),
        (
            V2::Maintenances(Some("scheduled")),
            "scheduled-maintenances/upcoming.json",
        ),
        (
            V2::Maintenances(Some("in_progress")),
            "scheduled-maintenances/active.json",
        ),
    ];
}

/// Writes one v2 document into `out`.
pub(super) fn v2(snapshot: &FeedSnapshot, which: V2, out: &mut dyn std::fmt::Write) {
    let (page, page_id) = page(snapshot);
    let _ = write!(out, "{{\"page\":{}", crate::text::json(&page));
    match which {
        V2::Status => {
            let (indicator, description) = indicator(&snapshot.sites);
            let status = json!({ "indicator": indicator, "description": description });
            let _ = write!(out, ",\"status\":{status}");
        }
        V2::Components => {
            let _ = out.write_str(",\"components\":[");
            write_components(snapshot, &page_id, out);
            let _ = out.write_char(']');
        }
        V2::Incidents | V2::UnresolvedIncidents => {
            let _ = out.write_str(",\"incidents\":");
            write_incidents(snapshot, &page_id, which == V2::UnresolvedIncidents, out);
        }
        V2::Maintenances(status) => {
            let _ = out.write_str(",\"scheduled_maintenances\":");
            let _ = out.write_str(&crate::text::json(&maintenances(
                snapshot, &page_id, status,
            )));
        }
    }
    let _ = out.write_str("}\n");
}

/// The components, comma-separated, each written as it is made.
fn write_components(snapshot: &FeedSnapshot, page_id: &str, out: &mut dyn std::fmt::Write) {
    snapshot
        .sites
        .iter()
        .enumerate()
        .for_each(|(position, site)| {
            let diagnosis = site.latest.as_ref().map(|l| {
                let d = &l.diagnosis;
                let summary = if snapshot.public {
                    super::public_summary(d.cause, &d.summary)
                } else {
                    d.summary.to_string()
                };
                json!({
                    "checked_at": rfc3339(l.at),
                    "status": d.status.as_str(),
                    "hop": d.hop.as_str(),
                    "cause": d.cause.as_str(),
                    "confidence": d.confidence.as_str(),
                    "summary": summary,
                })
            });
            let uptime: serde_json::Map<String, Value> = WINDOWS
                .iter()
                .zip(site.uptime())
                .map(|((label, _), share)| (label.to_string(), json!(share)))
                .collect();
            let mut component = json!({
                "id": short_id(&format!("site:{}", site.name)),
                "name": site.name,
                "status": component_status(site).as_str(),
                "created_at": Value::Null,
                "updated_at": site.latest.as_ref().map(|l| rfc3339(l.at)),
                "position": position + 1,
                "description": site.url,
                "showcase": true,
                "start_date": Value::Null,
                "group_id": Value::Null,
                "page_id": page_id,
                "group": false,
                "only_show_if_degraded": false,
                "probe": {
                    "url": site.url,
                    "diagnosis": diagnosis,
                    // Why the component's status is worse than its latest check: an
                    // incident of that severity is open.
                    "open": site.open_lighter.map(Severity::as_str),
                    "uptime": uptime,
                },
            });
            if !site.regions.is_empty() {
                component["probe"]["regions"] = site
                    .regions
                    .iter()
                    .map(|r| {
                        json!({
                            "region": &*r.region,
                            "checked_at": rfc3339(r.at),
                            "status": r.seen.as_ref().map(|s| s.status.as_str()),
                            "cause": r.seen.as_ref().map(|s| s.cause.as_str()),
                            "summary": r.seen.as_ref().map(|s| if snapshot.public {
                                super::public_summary(s.cause, &s.summary)
                            } else {
                                s.summary.clone()
                            }),
                            "colo": r.seen.as_ref().and_then(|s| s.colo.as_deref()),
                            "total_ms": r.seen.as_ref().and_then(|s| s.total_ms),
                            "confirms_down": r.confirms_down,
                            "counted": r.live,
                        })
                    })
                    .collect();
            }
            if position > 0 {
                let _ = out.write_char(',');
            }
            let _ = out.write_str(&crate::text::json(&component));
        });
}

/// Incidents shown at most in `incidents.json` (Statuspage lists the 50 most recent).
const RECENT_INCIDENTS: usize = 50;

/// The incidents as a JSON list, newest first: the unresolved ones, or the most recent of all.
/// Each is serialised as it is made, like the components.
fn write_incidents(
    snapshot: &FeedSnapshot,
    page_id: &str,
    unresolved_only: bool,
    out: &mut dyn std::fmt::Write,
) {
    let mut chosen: Vec<&crate::store::IncidentRecord> = snapshot
        .incidents
        .iter()
        .filter(|i| !unresolved_only || i.closed_at.is_none())
        .collect();
    chosen.sort_by_key(|i| std::cmp::Reverse(i.opened_at));
    if !unresolved_only {
        chosen.truncate(RECENT_INCIDENTS);
    }
    let _ = out.write_char('[');
    for (n, incident) in chosen.into_iter().enumerate() {
        if n > 0 {
            let _ = out.write_char(',');
        }
        let _ = out.write_str(&crate::text::json(&incident_json(
            snapshot, page_id, incident,
        )));
    }
    let _ = out.write_char(']');
}

/// One incident in Statuspage's shape (`probe` adds ours): an update per cause, and one more
/// for its resolution.
fn incident_json(
    snapshot: &FeedSnapshot,
    page_id: &str,
    incident: &crate::store::IncidentRecord,
) -> Value {
    let id = short_id(&format!("incident:{}/{}", incident.site, incident.number));
    let components: Vec<Value> = incident
        .sites()
        .filter_map(|name| snapshot.sites.iter().find(|s| s.name == name))
        .map(component_ref)
        .collect();
    // The incident's own gravity, not the component's state now (a resolved outage stays an
    // outage in the history).
    let impact = match incident.severity {
        Severity::Warning => "minor",
        Severity::Intermittent => "major",
        Severity::Down => "critical",
    };
    let last = incident.causes.last();
    let update = |n: String, status: &str, body: String, at: time::OffsetDateTime| {
        json!({
            "id": short_id(&format!("update:{}/{}/{n}", incident.site, incident.number)),
            "status": status,
            "body": body,
            "incident_id": id,
            "created_at": rfc3339(at),
            "updated_at": rfc3339(at),
            "display_at": rfc3339(at),
            "affected_components": Value::Null,
            "deliver_notifications": true,
            "custom_tweet": Value::Null,
            "tweet_id": Value::Null,
        })
    };
    let mut updates: Vec<Value> = Vec::new();
    if let Some(closed) = incident.closed_at {
        updates.push(update(
            "resolved".into(),
            "resolved",
            format!(
                "Resolved after {}.",
                crate::text::duration((closed - incident.opened_at).unsigned_abs())
            ),
            closed,
        ));
    }
    updates.extend(incident.causes.iter().enumerate().rev().map(|(n, cause)| {
        update(
            n.to_string(),
            "identified",
            if snapshot.public {
                cause_title(&cause.cause)
            } else {
                format!("{} ({})", cause.summary, cause.cause)
            },
            cause.at,
        )
    }));
    let name = match last {
        Some(cause) => format!(
            "{}{}: {}",
            severity_prefix(incident.severity),
            incident.sites_label(),
            cause_title(&cause.cause)
        ),
        None => format!("{} is down", incident.sites_label()),
    };
    let updated = incident
        .closed_at
        .unwrap_or(last.map_or(incident.opened_at, |c| c.at));
    json!({
        "id": id,
        "name": name,
        "status": if incident.closed_at.is_some() { "resolved" } else { "identified" },
        "created_at": rfc3339(incident.opened_at),
        "updated_at": rfc3339(updated),
        "monitoring_at": Value::Null,
        "resolved_at": incident.closed_at.map(rfc3339),
        "impact": impact,
        "shortlink": snapshot.url.clone().unwrap_or_default(),
        "started_at": rfc3339(incident.opened_at),
        "page_id": page_id,
        "incident_updates": updates,
        "components": components,
        "probe": {
            "site": incident.site,
            "sites": incident.sites().collect::<Vec<_>>(),
            "number": incident.number,
            "severity": incident.severity.as_str(),
            "group": incident.group,
            "cause": last.map(|c| c.cause.clone()),
        },
    })
}

/// A component as an incident or a maintenance names it: its id, name and status now.
fn component_ref(site: &SiteFeed) -> Value {
    json!({
        "id": short_id(&format!("site:{}", site.name)),
        "name": site.name,
        "status": component_status(site).as_str(),
    })
}

/// The maintenance windows as Statuspage lists them (`status`: only those scheduled, or only
/// those in progress).
fn maintenances(snapshot: &FeedSnapshot, page_id: &str, only: Option<&str>) -> Vec<Value> {
    snapshot
        .maintenance
        .iter()
        .filter_map(|w| {
            let status = if w.start <= snapshot.generated_at {
                "in_progress"
            } else {
                "scheduled"
            };
            if only.is_some_and(|o| o != status) {
                return None;
            }
            let affected: Vec<Value> = snapshot
                .sites
                .iter()
                .filter(|s| w.sites.is_empty() || w.sites.iter().any(|n| n == s.name))
                .map(component_ref)
                .collect();
            let name = w.reason.clone().unwrap_or_else(|| "Maintenance".into());
            Some(json!({
                "id": short_id(&format!("maintenance:{}:{}", rfc3339(w.start), name)),
                "name": name,
                "status": status,
                "created_at": rfc3339(w.start),
                "updated_at": rfc3339(w.start),
                "monitoring_at": Value::Null,
                "resolved_at": Value::Null,
                "impact": "maintenance",
                "shortlink": snapshot.url.clone().unwrap_or_default(),
                "started_at": rfc3339(w.start),
                "page_id": page_id,
                "incident_updates": [],
                "components": affected,
                "scheduled_for": rfc3339(w.start),
                "scheduled_until": rfc3339(w.end),
            }))
        })
        .collect()
}

/// What an incident's name starts with: nothing for an outage, its kind for the others.
pub(super) fn severity_prefix(severity: Severity) -> &'static str {
    match severity {
        Severity::Down => "",
        Severity::Warning => "Warning — ",
        Severity::Intermittent => "Intermittent — ",
    }
}

/// A cause id's title (`fpm_unreachable` → "the web server cannot reach PHP-FPM"); the id itself when
/// this version does not know it.
pub(super) fn cause_title(id: &str) -> String {
    serde_json::from_value::<Cause>(Value::String(id.to_string()))
        .map_or_else(|_| id.to_string(), |c| c.title().to_string())
}

/// `api/v1/sla.json`: each site's availability per UTC calendar month (this one and the three
/// before), from the hourly counts, the hours of its maintenance windows left out.
pub(super) fn sla(snapshot: &FeedSnapshot, out: &mut dyn std::fmt::Write) {
    let (page, _) = page(snapshot);
    let months: Vec<String> = (0..super::MONTHS)
        .map(|back| {
            let start = super::month_start(snapshot.generated_at, back);
            format!("{:04}-{:02}", start.year(), u8::from(start.month()))
        })
        .collect();
    let _ = write!(
        out,
        "{{\"page\":{},\"months\":{},\"maintenance_excluded\":true,\"sites\":[",
        crate::text::json(&page),
        crate::text::json(&months)
    );
    for (n, site) in snapshot.sites.iter().enumerate() {
        let per_month: Vec<Value> = site
            .months
            .iter()
            .zip(&months)
            .map(|(count, month)| {
                json!({
                    "month": month,
                    "availability": count.availability(),
                    "results": count.total,
                    "down_results": count.down,
                    "maintenance_hours": count.maintenance_hours,
                })
            })
            .collect();
        if n > 0 {
            let _ = out.write_char(',');
        }
        let site = json!({ "name": site.name, "url": site.url, "months": per_month });
        let _ = out.write_str(&crate::text::json(&site));
    }
    let _ = out.write_str("]}\n");
}
