//! Our own DNS lookups for the edge route: A and AAAA asked separately, timed separately, with
//! the answer kept (addresses, TTL, failure kind). No cache and no hosts file, so each probe sees
//! what DNS says now.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

use crate::engine::cloudflare::is_cloudflare_address;
use crate::observe::{io_error_kind, millis, DnsAnswer, DnsFailure, ErrorKind, Resolution};

/// Why we could not even ask DNS (a problem with this machine, not with the site).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveSetupError {
    /// The system resolver configuration (/etc/resolv.conf) could not be read.
    #[error("cannot read the system DNS configuration ({0}); pass --resolver ADDR")]
    SystemConfig(String),
    /// The resolver could not be built.
    #[error("cannot set up the DNS resolver: {0}")]
    Build(String),
}

pub use crate::settings::Nameserver;

/// A resolver set up once per probe run.
pub struct DnsClient {
    resolver: TokioResolver,
    nameserver: Nameserver,
    timeout: Duration,
}

impl DnsClient {
    /// Builds a resolver; each lookup is bounded by `timeout` in all.
    pub fn new(nameserver: Nameserver, timeout: Duration) -> Result<Self, ResolveSetupError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match nameserver {
            Nameserver::System => TokioResolver::builder(provider)
                .map_err(|e| ResolveSetupError::SystemConfig(e.to_string()))?,
            Nameserver::At(address) => {
                let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
                udp.port = address.port();
                let mut tcp = ConnectionConfig::new(ProtocolConfig::Tcp);
                tcp.port = address.port();
                let server = NameServerConfig::new(address.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    provider,
                )
            }
        };
        let options = builder.options_mut();
        options.cache_size = 0;
        options.use_hosts_file = ResolveHosts::Never;
        // Two tries per server inside the overall bound: one lost UDP datagram is not an outage.
        options.attempts = 2;
        options.timeout = (timeout / 2).max(Duration::from_millis(100));
        let resolver = builder
            .build()
            .map_err(|e| ResolveSetupError::Build(e.to_string()))?;
        Ok(Self {
            resolver,
            nameserver,
            timeout,
        })
    }

    /// Asks for A and AAAA at once, each timed on its own.
    pub async fn resolve(&self, name: &str) -> Resolution {
        // A trailing dot makes the name absolute: no search domains are tried.
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let (a, aaaa) = tokio::join!(
            self.query(&fqdn, RecordType::A),
            self.query(&fqdn, RecordType::AAAA)
        );
        Resolution {
            name: name.to_string(),
            resolver: match self.nameserver {
                Nameserver::System => "system".to_string(),
                Nameserver::At(address) => address.to_string(),
            },
            a,
            aaaa,
        }
    }

    async fn query(&self, fqdn: &str, record_type: RecordType) -> DnsAnswer {
        let start = Instant::now();
        let lookup = async {
            match record_type {
                RecordType::A => self.resolver.ipv4_lookup(fqdn).await,
                _ => self.resolver.ipv6_lookup(fqdn).await,
            }
        };
        let result = tokio::time::timeout(self.timeout, lookup).await;
        let duration_ms = millis(start.elapsed());
        let mut answer = DnsAnswer {
            record_type: record_type.to_string(),
            duration_ms,
            addresses: Vec::new(),
            ttl: None,
            cloudflare: false,
            error: None,
        };
        match result {
            Ok(Ok(lookup)) => {
                for record in lookup.answers() {
                    let ip = match &record.data {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                        _ => continue, // CNAMEs on the way
                    };
                    answer.addresses.push(ip);
                    answer.ttl = Some(answer.ttl.map_or(record.ttl, |t| t.min(record.ttl)));
                }
                if answer.addresses.is_empty() {
                    answer.error = Some(DnsFailure {
                        kind: ErrorKind::NoRecords,
                        message: format!("no {record_type} record for {fqdn}"),
                    });
                }
            }
            Ok(Err(e)) => {
                let kind = net_error_kind(&e);
                let message = match kind {
                    ErrorKind::Nxdomain => format!("{fqdn} does not exist (NXDOMAIN)"),
                    ErrorKind::NoRecords => {
                        format!("{fqdn} exists but has no {record_type} record")
                    }
                    ErrorKind::Servfail => {
                        format!("the DNS server failed to answer for {fqdn} (SERVFAIL)")
                    }
                    ErrorKind::Refused => {
                        format!("the DNS server refused to answer for {fqdn} (REFUSED)")
                    }
                    _ => format!("{record_type} lookup of {fqdn} failed: {e}"),
                };
                answer.error = Some(DnsFailure { kind, message });
            }
            Err(_) => {
                answer.error = Some(DnsFailure {
                    kind: ErrorKind::Timeout,
                    message: format!(
                        "no {record_type} answer for {fqdn} within {:?}",
                        self.timeout
                    ),
                })
            }
        }
        answer.cloudflare = answer.addresses.iter().any(|ip| is_cloudflare_address(*ip));
        answer
    }
}

fn net_error_kind(e: &NetError) -> ErrorKind {
    match e {
        _ if e.is_nx_domain() => ErrorKind::Nxdomain,
        _ if e.is_no_records_found() => ErrorKind::NoRecords,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => ErrorKind::Servfail,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => ErrorKind::Refused,
        NetError::Timeout => ErrorKind::Timeout,
        NetError::Io(io) => io_error_kind(io),
        _ => ErrorKind::Protocol,
    }
}
