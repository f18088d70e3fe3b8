//! The HTML status page (server-rendered, no script, readable on a phone) and the SVG badges.

use super::status::{cause_title, component_status, severity_prefix, ComponentStatus};
use super::{file_name, percent, FeedSnapshot, SiteFeed, WINDOWS};
use crate::alert::Severity;
use crate::text::{rfc3339, xml};

/// Words and colour for a Statuspage component status.
fn presentation(status: ComponentStatus) -> (&'static str, &'static str) {
    match status {
        ComponentStatus::Operational => ("Operational", "#1a7f37"),
        ComponentStatus::DegradedPerformance => ("Degraded performance", "#9a6700"),
        ComponentStatus::PartialOutage => ("Partial outage", "#bc4c00"),
        ComponentStatus::MajorOutage => ("Major outage", "#cf222e"),
        ComponentStatus::UnderMaintenance => ("Under maintenance", "#0969da"),
    }
}

/// The colour classes of a day's bar by its uptime, best first, with the legend's words.
const DAY_CLASSES: [(&str, &str); 6] = [
    ("up", "100%"),
    ("blip", "99% or more"),
    ("minor", "90–99%"),
    ("major", "50–90%"),
    ("down", "under 50%"),
    ("none", "no data"),
];

/// The colour class of one day's bar: by the day's share of probes that were not down.
fn day_class(total: u32, down: u32) -> &'static str {
    if total == 0 {
        return "none";
    }
    let share = f64::from(total - down) / f64::from(total);
    match share {
        s if s >= 1.0 => "up",
        s if s >= 0.99 => "blip",
        s if s >= 0.90 => "minor",
        s if s >= 0.50 => "major",
        _ => "down",
    }
}

const STYLE: &str = "body{font:16px/1.45 system-ui,sans-serif;margin:0 auto;max-width:56rem;padding:1rem;color:#1f2328}\
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}\
.overall{padding:.75rem 1rem;border-radius:.4rem;color:#fff;font-weight:600}\
ul{list-style:none;padding:0}.site,.incident{border:1px solid #d0d7de;border-radius:.4rem;padding:.75rem 1rem;margin:.5rem 0}\
.head{display:flex;justify-content:space-between;gap:1rem;flex-wrap:wrap}.state{font-weight:600}\
.summary{margin:.25rem 0;color:#57606a}.uptime{font-size:.85rem;color:#57606a}\
.bars{display:flex;gap:1px;height:1.6rem;margin:.4rem 0}.bars span{flex:1;border-radius:1px}\
.up{background:#2da44e}.blip{background:#a2c62f}.minor{background:#d4a72c}.major{background:#e16f24}.down{background:#cf222e}.none{background:#d0d7de}\
.legend{font-size:.8rem;color:#57606a}.legend span{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin:0 .25rem 0 .75rem;vertical-align:middle}\
.url{font-size:.85rem;color:#57606a}\
footer{margin-top:2rem;font-size:.8rem;color:#6e7781}code{font-size:.85em}\
.regions{margin:.25rem 0;padding-left:1rem;font-size:.85rem;color:#57606a}";

/// The page, written into `out` as it is made.
pub(super) fn page(snapshot: &FeedSnapshot, out: &mut dyn std::fmt::Write) {
    let title = xml(&snapshot.title);
    let worst = snapshot
        .sites
        .iter()
        .map(component_status)
        .max()
        .unwrap_or(ComponentStatus::Operational);
    // The banner says what status.json's indicator says, in Statuspage's words.
    let (indicator, overall) = super::status::indicator(&snapshot.sites);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title><link rel=\"alternate\" type=\"application/atom+xml\" href=\"incidents.atom\">\
         <style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n\
         <p class=\"overall\" id=\"overall\" data-status=\"{}\" data-indicator=\"{indicator}\" style=\"background:{}\">{overall}</p>\n",
        worst.as_str(),
        presentation(worst).1
    );

    // Outages first; warnings and intermittent failures apart, below them.
    let (outages, lighter): (Vec<_>, Vec<_>) = snapshot
        .incidents
        .iter()
        .filter(|i| i.closed_at.is_none())
        .partition(|i| i.severity == Severity::Down);
    for (open, heading, id) in [
        (outages, "Open incidents", "open-incidents"),
        (
            lighter,
            "Warnings and intermittent failures",
            "open-warnings",
        ),
    ] {
        if open.is_empty() {
            continue;
        }
        let _ = writeln!(out, "<h2>{heading}</h2>\n<ul id=\"{id}\">");
        for incident in open {
            let last = incident.causes.last();
            let _ = writeln!(
                out,
                "<li class=\"incident\" data-site=\"{}\"><div class=\"head\"><strong>{}</strong><span>since {}</span></div>\
                 <p class=\"summary\">{}</p></li>",
                xml(&incident.site),
                xml(&format!(
                    "{}{}: {}",
                    severity_prefix(incident.severity),
                    incident.sites_label(),
                    last.map_or("down".to_string(), |c| cause_title(&c.cause))
                )),
                snapshot.zone.clock(incident.opened_at),
                xml(&match last {
                    Some(c) if !snapshot.public => c.summary.clone(),
                    _ => String::new(),
                })
            );
        }
        let _ = out.write_str("</ul>\n");
    }

    let _ = out.write_str("<h2>Sites</h2>\n<ul id=\"sites\">\n");
    for site in &snapshot.sites {
        site_item(
            out,
            site,
            snapshot.generated_at,
            snapshot.public,
            &snapshot.zone,
        );
    }
    let _ = out.write_str("</ul>\n<p class=\"legend\" id=\"legend\">Each bar is a day's uptime:");
    for (class, words) in DAY_CLASSES {
        let _ = write!(out, "<span class=\"{class}\"></span>{words}");
    }
    let _ = out.write_str("</p>\n");

    // Monthly availability, as an SLA reads it: calendar months (UTC), maintenance left out.
    let _ = out.write_str(
        "<h2>Monthly availability</h2>\n<table id=\"monthly-availability\"><thead><tr><th>Site</th>",
    );
    for back in 0..super::MONTHS {
        let start = super::month_start(snapshot.generated_at, back);
        let _ = write!(out, "<th>{} {}</th>", start.month(), start.year());
    }
    let _ = out.write_str("</tr></thead><tbody>\n");
    for site in &snapshot.sites {
        let _ = write!(
            out,
            "<tr data-site=\"{}\"><td>{}</td>",
            xml(site.name),
            xml(site.name)
        );
        for month in &site.months {
            let _ = write!(out, "<td>{}</td>", super::percent(month.availability()));
        }
        let _ = out.write_str("</tr>\n");
    }
    let _ = out.write_str(
        "</tbody></table>\n<p class=\"legend\">Share of probes not down per calendar month (UTC); hours of a maintenance window are left out · <a href=\"api/v1/sla.json\">sla.json</a></p>\n",
    );

    let resolved: Vec<_> = snapshot
        .incidents
        .iter()
        .filter(|i| i.closed_at.is_some())
        .take(10)
        .collect();
    if !resolved.is_empty() {
        let _ = out.write_str("<h2>Resolved incidents</h2>\n<ul id=\"resolved-incidents\">\n");
        for incident in resolved {
            // When, for how long, and why.
            let closed = incident.closed_at.unwrap_or(incident.opened_at);
            let lasted =
                std::time::Duration::try_from(closed - incident.opened_at).unwrap_or_default();
            let _ = writeln!(
                out,
                "<li class=\"incident\" data-site=\"{}\"><div class=\"head\"><strong>{}</strong><span>{} – {} · {}</span></div></li>",
                xml(&incident.site),
                xml(&format!(
                    "{}{}: {}",
                    severity_prefix(incident.severity),
                    incident.sites_label(),
                    incident
                        .causes
                        .last()
                        .map_or("down".to_string(), |c| cause_title(&c.cause))
                )),
                snapshot.zone.clock(incident.opened_at),
                snapshot.zone.clock(closed),
                crate::text::duration(lasted)
            );
        }
        let _ = out.write_str("</ul>\n");
    }
    let _ = writeln!(
        out,
        "<footer>Updated {} · <a href=\"status.json\">status.json</a> · \
         <a href=\"incidents.atom\">incidents.atom</a>{} · \
         uptime is the share of probes that were not down</footer>\n</body></html>",
        snapshot.zone.clock(snapshot.generated_at),
        // The metrics name the addresses dialled: for the operator's Prometheus, not linked
        // from a public page.
        if snapshot.public {
            ""
        } else {
            " · <a href=\"metrics\">metrics</a>"
        }
    );
}

fn site_item(
    out: &mut dyn std::fmt::Write,
    site: &SiteFeed,
    now: time::OffsetDateTime,
    public: bool,
    zone: &crate::text::Zone,
) {
    let status = component_status(site);
    let (words, colour) = presentation(status);
    let status = status.as_str();
    let name = xml(site.name);
    let url = xml(site.url);
    let (hop, cause) = site.latest.as_ref().map_or(("", ""), |l| {
        (l.diagnosis.hop.as_str(), l.diagnosis.cause.as_str())
    });
    // The hop and cause ids are for machines (data attributes); people read words.
    let _ = write!(
        out,
        "<li class=\"site\" data-site=\"{name}\" data-status=\"{status}\" data-hop=\"{hop}\" data-cause=\"{cause}\">\
         <div class=\"head\"><strong>{name}</strong>\
         <span class=\"state\" style=\"color:{colour}\">{words}</span></div>\
         <a class=\"url\" href=\"{url}\">{url}</a>"
    );
    if let Some(latest) = &site.latest {
        let (at, d) = (&latest.at, &latest.diagnosis);
        let summary = if public {
            super::public_summary(d.cause, &d.summary)
        } else {
            d.summary.to_string()
        };
        // The state shown beside the name comes from an open incident: say so, or it reads as
        // a contradiction of the latest check (a partial outage beside "all routes healthy").
        let open = match site.open_lighter {
            Some(Severity::Intermittent) => {
                "Fails now and then: an intermittent incident is open. The latest check: "
            }
            Some(Severity::Warning) => "A warning is open. The latest check: ",
            _ => "",
        };
        let summary = format!("{open}{summary}");
        let _ = write!(
            out,
            "<p class=\"summary\">{} <span title=\"{}\">Checked {}.</span></p>",
            xml(&summary),
            rfc3339(*at),
            zone.clock(*at)
        );
    }
    if !site.regions.is_empty() {
        let _ = out.write_str("<ul class=\"regions\">");
        for region in site.regions.iter() {
            let seen = region.seen.as_ref().map_or("no result".to_string(), |s| {
                let colo = s
                    .colo
                    .as_deref()
                    .map(|c| format!(" · {}", xml(c)))
                    .unwrap_or_default();
                format!("{} · {}{colo}", s.status.as_str(), s.cause.as_str())
            });
            let counted = if region.live {
                ""
            } else {
                " (silent, not counted)"
            };
            let _ = write!(
                out,
                "<li class=\"region\" data-region=\"{}\"><code>{}</code> {seen}{counted}</li>",
                xml(&region.region),
                xml(&region.region)
            );
        }
        let _ = out.write_str("</ul>");
    }
    let _ = out.write_str("<div class=\"bars\" aria-label=\"uptime per day, last 90 days\">");
    // Days of the same colour side by side make one bar as wide as they are: the page stays
    // small with thousands of sites, and each bar's title gives its days and their uptime.
    let mut days = site.day_bars(now).peekable();
    while let Some((first, total, down)) = days.next() {
        let class = day_class(total, down);
        let (mut last, mut sum_total, mut sum_down, mut width) = (first, total, down, 1);
        while let Some(&(day, t, d)) = days.peek() {
            if day_class(t, d) != class {
                break;
            }
            days.next();
            (last, sum_total, sum_down, width) = (day, sum_total + t, sum_down + d, width + 1);
        }
        let share = if sum_total == 0 {
            "no data".to_string()
        } else {
            percent(Some(f64::from(sum_total - sum_down) / f64::from(sum_total)))
        };
        let dates = if width == 1 {
            first.date().to_string()
        } else {
            format!("{} – {}", first.date(), last.date())
        };
        let _ = write!(
            out,
            "<span class=\"{class}\" style=\"flex:{width}\" title=\"{dates}: {share}\"></span>"
        );
    }
    let _ = out.write_str("</div><p class=\"uptime\">");
    let windows: Vec<String> = WINDOWS
        .iter()
        .zip(site.uptime())
        .map(|((label, _), share)| format!("{label} {}", percent(share)))
        .collect();
    let _ = writeln!(
        out,
        "{} · <a href=\"badge/{}.svg\">badge</a></p></li>",
        windows.join(" · "),
        xml(&file_name(site.name))
    );
}

/// A shields-style badge: the site's name, then its state in its colour.
pub(super) fn badge(site_name: &str, status: ComponentStatus) -> String {
    let (words, colour) = presentation(status);
    let words = words.to_lowercase();
    // Verdana 11px averages about 7 px a character.
    let width = |text: &str| 10 + 7 * text.chars().count();
    let (left, right) = (width(site_name), width(&words));
    let total = left + right;
    let name = xml(site_name);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total}\" height=\"20\" role=\"img\" aria-label=\"{name}: {words}\">\
<title>{name}: {words}</title>\
<rect width=\"{left}\" height=\"20\" fill=\"#555\"/><rect x=\"{left}\" width=\"{right}\" height=\"20\" fill=\"{colour}\"/>\
<g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\">\
<text x=\"{}\" y=\"14\">{name}</text><text x=\"{}\" y=\"14\">{words}</text></g></svg>\n",
        left / 2,
        left + right / 2
    )
}
