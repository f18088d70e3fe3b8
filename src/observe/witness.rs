//! What a server says of itself: PHP-FPM's status page (`pm.status_path`, read as JSON with
//! `?json&full`) and nginx's `stub_status`, read on the origin route. Outside timings infer a
//! saturated pool; the status page states it, with the requests holding the workers.
//!
//! Pure parsing of untrusted text: every number is checked, every string cut to a bound, and
//! anything that is not what the real servers write is refused with a reason (never a panic).

use serde::{Deserialize, Serialize};

/// Bytes of a status page read at most: PHP-FPM's full status of a pool of several thousand
/// workers fits; past this the page is refused as unreadable.
pub const WITNESS_READ_LIMIT: u64 = 1024 * 1024;
/// Workers kept of a full status (the busiest first); the rest are counted.
pub const PROCESSES_KEPT: usize = 32;
/// Longest request URI kept (query string already dropped).
const URI_MAX: usize = 200;
/// Longest short text kept (pool name, state, method).
const WORD_MAX: usize = 64;

/// What a status page showed, parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Witness {
    FpmStatus(FpmStatus),
    NginxStatus(NginxStatus),
    /// The page answered 200 but is not what the server writes (not JSON, a field missing or
    /// out of range, too large): the reason, for people.
    Unreadable(String),
}

/// PHP-FPM's pool status (`?json&full`), field for field, durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FpmStatus {
    pub pool: String,
    /// `static`, `dynamic` or `ondemand`.
    pub process_manager: String,
    /// When the pool started (Unix seconds, the server's clock).
    pub start_time: i64,
    /// Seconds since the pool started.
    pub start_since: u64,
    /// Requests the pool has accepted since it started.
    pub accepted_conn: u64,
    /// Requests waiting for a free worker now; 0 also when it cannot be measured (a unix
    /// socket on Linux: `listen_queue_len` is then 0 as well).
    pub listen_queue: u64,
    pub max_listen_queue: u64,
    /// The socket's backlog size; 0 when the queue cannot be measured.
    pub listen_queue_len: u64,
    pub idle_processes: u64,
    pub active_processes: u64,
    pub total_processes: u64,
    pub max_active_processes: u64,
    /// Times the pool wanted another worker and `pm.max_children` forbade it, since it started.
    pub max_children_reached: u64,
    /// Requests that ran past `request_slowlog_timeout`, since the pool started.
    pub slow_requests: u64,
    /// The workers, busiest first (running, then longest request), at most `PROCESSES_KEPT`.
    #[serde(default)]
    pub processes: Vec<FpmProcess>,
    /// Workers the page listed beyond those kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub processes_omitted: u64,
}

/// One PHP-FPM worker of the full status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FpmProcess {
    pub pid: u64,
    /// `Idle`, `Running`, `Reading headers`, `Finishing`, `Ending`, …
    pub state: String,
    /// Seconds since this worker started.
    pub start_since: u64,
    pub requests: u64,
    /// The current request's time so far (or the last request's, when idle).
    pub request_duration_ms: f64,
    pub request_method: String,
    /// Path only: the query string is dropped (it may hold tokens).
    pub request_uri: String,
    pub content_length: u64,
    /// The last finished request's CPU use, percent.
    pub last_request_cpu: f64,
    /// The last finished request's peak memory, bytes.
    pub last_request_memory: u64,
}

impl FpmProcess {
    /// Working on a request now (not idle between requests).
    pub fn is_busy(&self) -> bool {
        !self.state.eq_ignore_ascii_case("idle")
    }
}

/// nginx's `stub_status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NginxStatus {
    pub active: u64,
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
    /// Connections accepted, handled and requests served since nginx started: handled below
    /// accepted means connections were dropped (`worker_connections` reached).
    pub accepts: u64,
    pub handled: u64,
    pub requests: u64,
}

/// What one origin's status pages counted, kept between runs (in the region's state of the
/// site) to tell what happened in between: a restart, a pool that filled up meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WitnessCounters {
    /// The origin address (`IP:PORT`) the pages were read on.
    #[serde(rename = "o")]
    pub origin: String,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub fpm: Option<FpmCounters>,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<NginxCounters>,
}

/// PHP-FPM's counters as one run read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FpmCounters {
    /// When the run was made (Unix seconds).
    #[serde(rename = "t")]
    pub at: i64,
    #[serde(rename = "s")]
    pub start_time: i64,
    #[serde(rename = "a")]
    pub accepted_conn: u64,
    #[serde(rename = "m")]
    pub max_children_reached: u64,
}

/// nginx's counters as one run read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NginxCounters {
    #[serde(rename = "t")]
    pub at: i64,
    #[serde(rename = "a")]
    pub accepts: u64,
    #[serde(rename = "h")]
    pub handled: u64,
}

/// Origins whose counters are kept at most (a site has a few).
const ORIGINS_KEPT: usize = 8;

impl WitnessCounters {
    /// Each origin's counters as a run made at `at` read them.
    pub fn read(observations: &[super::Observation], at: i64) -> Vec<WitnessCounters> {
        let mut read: Vec<WitnessCounters> = Vec::new();
        for o in observations {
            let (Some(witness), Some(address)) = (&o.witness, o.address) else {
                continue;
            };
            let origin = address.to_string();
            let at_index = match read.iter().position(|c| c.origin == origin) {
                Some(i) => i,
                None => {
                    read.push(WitnessCounters {
                        origin,
                        fpm: None,
                        nginx: None,
                    });
                    read.len() - 1
                }
            };
            let entry = &mut read[at_index];
            match witness {
                Witness::FpmStatus(s) => {
                    entry.fpm = Some(FpmCounters {
                        at,
                        start_time: s.start_time,
                        accepted_conn: s.accepted_conn,
                        max_children_reached: s.max_children_reached,
                    })
                }
                Witness::NginxStatus(s) => {
                    entry.nginx = Some(NginxCounters {
                        at,
                        accepts: s.accepts,
                        handled: s.handled,
                    })
                }
                Witness::Unreadable(_) => {}
            }
        }
        read.retain(|c| c.fpm.is_some() || c.nginx.is_some());
        read
    }

    /// `kept` brought up to date with what a run `read`: per origin and per page, what was read
    /// replaces what was kept; what this run could not read stays as the last read of it.
    pub fn merge(kept: &mut Vec<WitnessCounters>, read: Vec<WitnessCounters>) {
        for fresh in read {
            match kept.iter_mut().find(|k| k.origin == fresh.origin) {
                Some(k) => {
                    if fresh.fpm.is_some() {
                        k.fpm = fresh.fpm;
                    }
                    if fresh.nginx.is_some() {
                        k.nginx = fresh.nginx;
                    }
                }
                None => kept.push(fresh),
            }
        }
        if kept.len() > ORIGINS_KEPT {
            let extra = kept.len() - ORIGINS_KEPT;
            kept.drain(..extra);
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a status page could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    #[error("not JSON ({0})")]
    NotJson(String),
    #[error("not PHP-FPM's status: {0}")]
    NotFpm(String),
    #[error("not nginx's stub_status: {0}")]
    NotStubStatus(String),
}

impl FpmStatus {
    /// Reads PHP-FPM's `?json&full` page. Workers are kept busiest first, at most
    /// `PROCESSES_KEPT`.
    pub fn parse(body: &str) -> Result<FpmStatus, WitnessError> {
        // serde_json refuses nesting deeper than 128 levels: a hostile page cannot recurse.
        let value: serde_json::Value =
            serde_json::from_str(body.trim()).map_err(|e| WitnessError::NotJson(format!("{e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| WitnessError::NotFpm("not a JSON object".into()))?;
        let number = |key: &str| -> Result<u64, WitnessError> {
            object
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| WitnessError::NotFpm(format!("no whole number {key:?}")))
        };
        let word = |key: &str| -> Result<String, WitnessError> {
            object
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(|s| bounded(s, WORD_MAX))
                .ok_or_else(|| WitnessError::NotFpm(format!("no text {key:?}")))
        };
        let start_time = i64::try_from(number("start time")?)
            .map_err(|_| WitnessError::NotFpm("\"start time\" out of range".into()))?;
        let mut processes = Vec::new();
        let mut listed = 0u64;
        if let Some(list) = object.get("processes") {
            let list = list
                .as_array()
                .ok_or_else(|| WitnessError::NotFpm("\"processes\" is not a list".into()))?;
            listed = list.len() as u64;
            for p in list {
                processes.push(FpmProcess::parse(p)?);
            }
        }
        processes.sort_by(|a, b| {
            b.is_busy().cmp(&a.is_busy()).then(
                b.request_duration_ms
                    .partial_cmp(&a.request_duration_ms)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
        });
        processes.truncate(PROCESSES_KEPT);
        Ok(FpmStatus {
            pool: word("pool")?,
            process_manager: word("process manager")?,
            start_time,
            start_since: number("start since")?,
            accepted_conn: number("accepted conn")?,
            listen_queue: number("listen queue")?,
            max_listen_queue: number("max listen queue")?,
            listen_queue_len: number("listen queue len")?,
            idle_processes: number("idle processes")?,
            active_processes: number("active processes")?,
            total_processes: number("total processes")?,
            max_active_processes: number("max active processes")?,
            max_children_reached: number("max children reached")?,
            slow_requests: number("slow requests")?,
            processes_omitted: listed - processes.len() as u64,
            processes,
        })
    }

    /// The busy workers other than the one answering a status request for `own_path` (the
    /// request that read this page, when the pool itself serves it).
    pub fn busy_others<'a>(&'a self, own_path: &str) -> impl Iterator<Item = &'a FpmProcess> {
        let own = own_path.to_string();
        self.processes
            .iter()
            .filter(move |p| p.is_busy() && p.request_uri != own)
    }

    /// Whether the worker that answered this read belongs to the pool (no `pm.status_listen`).
    pub fn served_itself(&self, own_path: &str) -> bool {
        self.processes
            .iter()
            .any(|p| p.is_busy() && p.request_uri == own_path)
    }

    /// The pool's workers as read by a status request for `own_path`: the one count the table,
    /// the evidence and the diagnosis all show.
    pub fn workers(&self, own_path: &str) -> WorkerCount {
        let ours = self.served_itself(own_path);
        WorkerCount {
            busy: self.active_processes.saturating_sub(u64::from(ours)),
            idle: self.idle_processes,
            total: self.total_processes,
            ours,
        }
    }
}

/// A pool's workers, the one answering our own status read set apart: it is busy only because
/// we asked, and free again the moment the page is sent, so it never counts as busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerCount {
    /// Busy with requests other than our status read.
    pub busy: u64,
    pub idle: u64,
    /// The pool's size as PHP-FPM counts it (ours included).
    pub total: u64,
    /// One worker of the pool answered our status read (no `pm.status_listen`).
    pub ours: bool,
}

impl WorkerCount {
    /// Every worker busy with someone else's request: none free even once our read ends.
    pub fn all_busy(&self) -> bool {
        self.busy > 0 && self.busy >= self.total
    }

    /// Workers free for the next request: the idle ones, and ours once its read ends.
    pub fn free(&self) -> u64 {
        self.idle + u64::from(self.ours)
    }

    /// "3 workers: 0 busy, 2 idle, 1 answering this status read".
    /// "3 workers: 0 busy, 2 idle, 1 answering this status read": the parts add up to the
    /// pool.
    pub fn describe(&self) -> String {
        let ours = if self.ours {
            ", 1 answering this status read"
        } else {
            ""
        };
        format!(
            "{} worker{}: {} busy, {} idle{ours}",
            self.total,
            if self.total == 1 { "" } else { "s" },
            self.busy,
            self.idle
        )
    }
}

impl FpmProcess {
    fn parse(value: &serde_json::Value) -> Result<FpmProcess, WitnessError> {
        let object = value
            .as_object()
            .ok_or_else(|| WitnessError::NotFpm("a process is not an object".into()))?;
        let number = |key: &str| -> Result<u64, WitnessError> {
            object
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| WitnessError::NotFpm(format!("a process has no whole {key:?}")))
        };
        let real = |key: &str| -> f64 {
            object
                .get(key)
                .and_then(serde_json::Value::as_f64)
                // Bounded before it is scaled: a huge value must not become infinity (JSON
                // has no infinity: the report would not read back).
                .filter(|v| v.is_finite() && (0.0..=1e9).contains(v))
                .unwrap_or(0.0)
        };
        let text = |key: &str, max: usize| -> String {
            object
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(|s| bounded(s, max))
                .unwrap_or_default()
        };
        let uri = text("request uri", usize::MAX);
        let path = uri.split(['?', '#']).next().unwrap_or_default();
        Ok(FpmProcess {
            pid: number("pid")?,
            state: text("state", WORD_MAX),
            start_since: number("start since")?,
            requests: number("requests")?,
            // PHP-FPM writes microseconds.
            request_duration_ms: (number("request duration")? as f64 / 1000.0).round(),
            request_method: text("request method", WORD_MAX),
            request_uri: bounded(path, URI_MAX),
            content_length: number("content length").unwrap_or(0),
            last_request_cpu: (real("last request cpu") * 100.0).round() / 100.0,
            last_request_memory: number("last request memory").unwrap_or(0),
        })
    }
}

impl NginxStatus {
    /// Reads nginx's `stub_status` page:
    /// `Active connections: N` / `server accepts handled requests` / ` A H R` /
    /// `Reading: N Writing: N Waiting: N`.
    pub fn parse(body: &str) -> Result<NginxStatus, WitnessError> {
        let refuse = |why: &str| WitnessError::NotStubStatus(why.to_string());
        let mut lines = body.lines().map(str::trim).filter(|l| !l.is_empty());
        let active = lines
            .next()
            .and_then(|l| l.strip_prefix("Active connections:"))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| refuse("no \"Active connections\" line"))?;
        if lines.next() != Some("server accepts handled requests") {
            return Err(refuse("no \"server accepts handled requests\" line"));
        }
        let counters: Vec<u64> = lines
            .next()
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let [accepts, handled, requests] = counters[..] else {
            return Err(refuse("the counters line is not three numbers"));
        };
        let last: Vec<&str> = lines
            .next()
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let [("Reading:", reading), ("Writing:", writing), ("Waiting:", waiting)] = [
            (last.first(), last.get(1)),
            (last.get(2), last.get(3)),
            (last.get(4), last.get(5)),
        ]
        .map(|(k, v)| {
            (
                k.copied().unwrap_or(""),
                v.and_then(|v| v.parse::<u64>().ok()),
            )
        }) else {
            return Err(refuse("no \"Reading: Writing: Waiting:\" line"));
        };
        let (Some(reading), Some(writing), Some(waiting)) = (reading, writing, waiting) else {
            return Err(refuse("the Reading/Writing/Waiting counts are not numbers"));
        };
        Ok(NginxStatus {
            active,
            reading,
            writing,
            waiting,
            accepts,
            handled,
            requests,
        })
    }
}

/// `text` cut to `max` characters, control characters dropped.
fn bounded(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As PHP-FPM 8.2 wrote it in the lab (`?json&full`, three workers busy).
    const FPM: &str = r#"{"pool":"www","process manager":"static","start time":1796596302,"start since":7,"accepted conn":3,"listen queue":2,"max listen queue":2,"listen queue len":4096,"idle processes":0,"active processes":3,"total processes":3,"max active processes":3,"max children reached":0,"slow requests":0, "processes":[{"pid":24242,"state":"Idle","start time":1796596302,"start since":7,"requests":1,"request duration":1200,"request method":"GET","request uri":"\/index.php","content length":0,"user":"-","script":"\/w\/index.php","last request cpu":0.00,"last request memory":2097152},{"pid":24243,"state":"Running","start time":1796596302,"start since":7,"requests":1,"request duration":5595626,"request method":"GET","request uri":"\/slow.php?s=6&token=secret","content length":0,"user":"-","script":"\/w\/slow.php","last request cpu":0.00,"last request memory":0}]}"#;

    #[test]
    fn fpm_status_is_read_busiest_first_without_query_strings() {
        let status = FpmStatus::parse(FPM).unwrap();
        assert_eq!(status.pool, "www");
        assert_eq!((status.listen_queue, status.listen_queue_len), (2, 4096));
        assert_eq!(status.processes[0].request_uri, "/slow.php");
        assert_eq!(status.processes[0].request_duration_ms, 5596.0);
        assert_eq!(status.processes[1].last_request_memory, 2_097_152);
        assert!(!FPM.contains("secret") || !format!("{status:?}").contains("secret"));
    }

    #[test]
    fn the_worker_answering_our_read_is_never_counted_busy() {
        // As PHP-FPM 8.2 wrote it in the lab: a pool of 3, our status read served by one of
        // its workers, the other two idle.
        let page = FPM
            .replace(
                "\"idle processes\":0,\"active processes\":3",
                "\"idle processes\":2,\"active processes\":1",
            )
            .replace("\\/slow.php?s=6&token=secret", "\\/fpm-status?json&full");
        let status = FpmStatus::parse(&page).unwrap();
        let count = status.workers("/fpm-status");
        assert_eq!(
            (count.busy, count.idle, count.total, count.ours),
            (0, 2, 3, true)
        );
        assert_eq!(
            count.describe(),
            "3 workers: 0 busy, 2 idle, 1 answering this status read"
        );
        assert!(!count.all_busy());
        // Two others busy and ours: no idle worker, yet not full — ours is free in a moment.
        let two = WorkerCount {
            busy: 2,
            idle: 0,
            total: 3,
            ours: true,
        };
        assert!(!two.all_busy() && two.free() == 1);
        // Read through a status pool of its own: every worker of the pool busy is full.
        let full = WorkerCount {
            busy: 3,
            idle: 0,
            total: 3,
            ours: false,
        };
        assert!(full.all_busy());
        assert_eq!(full.describe(), "3 workers: 3 busy, 0 idle");
    }

    #[test]
    fn hostile_fpm_pages_are_refused_with_a_reason() {
        for (body, why) in [
            ("<html>403</html>", "not JSON"),
            ("[1,2]", "not a JSON object"),
            (r#"{"pool":"www"}"#, "start time"),
            (
                &FPM.replace("\"accepted conn\":3", "\"accepted conn\":-3"),
                "accepted conn",
            ),
            (
                &FPM.replace("\"listen queue\":2,", "\"listen queue\":1e99,"),
                "listen queue",
            ),
            (&"[".repeat(10_000), "not JSON"),
        ] {
            let e = FpmStatus::parse(body).unwrap_err().to_string();
            assert!(e.contains(why), "{e} should say {why}");
        }
    }

    #[test]
    fn a_huge_pool_keeps_its_busiest_workers_and_counts_the_rest() {
        let worker = |pid: u32, seconds: u64| {
            format!(
                r#"{{"pid":{pid},"state":"Running","start since":1,"requests":1,"request duration":{},"request method":"GET","request uri":"/{}","content length":0}}"#,
                seconds * 1_000_000,
                "x".repeat(500)
            )
        };
        let list: Vec<String> = (0..500).map(|i| worker(i, u64::from(i))).collect();
        let body = FPM.replace(
            r#""processes":["#,
            &format!(r#""processes":[{},"#, list.join(",")),
        );
        let status = FpmStatus::parse(&body).unwrap();
        assert_eq!(status.processes.len(), PROCESSES_KEPT);
        assert_eq!(status.processes_omitted, 502 - PROCESSES_KEPT as u64);
        assert_eq!(status.processes[0].request_duration_ms, 499_000.0);
        assert_eq!(status.processes[0].request_uri.chars().count(), URI_MAX);
    }

    #[test]
    fn stub_status_is_read_and_anything_else_refused() {
        let page = "Active connections: 291 \nserver accepts handled requests\n 16630948 16630940 31070465 \nReading: 6 Writing: 179 Waiting: 106 \n";
        let status = NginxStatus::parse(page).unwrap();
        assert_eq!(
            (
                status.active,
                status.accepts - status.handled,
                status.waiting
            ),
            (291, 8, 106)
        );
        for bad in [
            "",
            "<html>hello</html>",
            "Active connections: x\n",
            "Active connections: 1\nserver accepts handled requests\n 1 2\nReading: 0 Writing: 1 Waiting: 0\n",
            "Active connections: 1\nserver accepts handled requests\n 1 2 3\nReading: 0 Writing: 1\n",
        ] {
            assert!(NginxStatus::parse(bad).is_err(), "{bad:?}");
        }
    }
}
