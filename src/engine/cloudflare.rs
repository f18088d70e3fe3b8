//! Cloudflare reference data shipped inside the binary: its published address ranges and the
//! Origin CA root. Pure lookups; no I/O.

use std::net::IpAddr;

/// Cloudflare's published IPv4 ranges (cloudflare.com/ips-v4), as (network, prefix length).
const IPV4_RANGES: &[([u8; 4], u8)] = &[
    ([173, 245, 48, 0], 20),
    ([103, 21, 244, 0], 22),
    ([103, 22, 200, 0], 22),
    ([103, 31, 4, 0], 22),
    ([141, 101, 64, 0], 18),
    ([108, 162, 192, 0], 18),
    ([190, 93, 240, 0], 20),
    ([188, 114, 96, 0], 20),
    ([197, 234, 240, 0], 22),
    ([198, 41, 128, 0], 17),
    ([162, 158, 0, 0], 15),
    ([104, 16, 0, 0], 13),
    ([104, 24, 0, 0], 14),
    ([172, 64, 0, 0], 13),
    ([131, 0, 72, 0], 22),
];

/// Cloudflare's published IPv6 ranges (cloudflare.com/ips-v6), as (first 32 bits, prefix length).
const IPV6_RANGES: &[(u32, u8)] = &[
    (0x2400_cb00, 32),
    (0x2606_4700, 32),
    (0x2803_f800, 32),
    (0x2405_b500, 32),
    (0x2405_8100, 32),
    (0x2a06_98c0, 29),
    (0x2c0f_f248, 32),
];

/// The public root of Cloudflare's Origin CA (RSA). Full (strict) mode trusts it, browsers do not,
/// so the probe trusts it on the origin route only.
pub const ORIGIN_CA_ROOT_PEM: &[u8] = include_bytes!("../../data/cloudflare-origin-ca-rsa.pem");

/// Whether an address lies inside Cloudflare's published ranges.
pub fn is_cloudflare_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let addr = u32::from(v4);
            IPV4_RANGES.iter().any(|(net, len)| {
                let mask = u32::MAX << (32 - u32::from(*len));
                addr & mask == u32::from_be_bytes(*net) & mask
            })
        }
        IpAddr::V6(v6) => {
            let top = (u128::from(v6) >> 96) as u32;
            IPV6_RANGES.iter().any(|(net, len)| {
                let mask = u32::MAX << (32 - u32::from(*len));
                top & mask == net & mask
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_inside_and_outside_the_ranges() {
        let inside = [
            "104.16.132.229",
            "172.67.1.1",
            "162.159.255.255",
            "2606:4700::6810:84e5",
            "2a06:98c7::1",
        ];
        for ip in inside {
            assert!(
                is_cloudflare_address(ip.parse().unwrap()),
                "{ip} should be Cloudflare"
            );
        }
        let outside = [
            "127.0.0.1",
            "104.15.255.255",
            "172.72.0.0",
            "8.8.8.8",
            "::1",
            "2a06:98c8::1",
        ];
        for ip in outside {
            assert!(
                !is_cloudflare_address(ip.parse().unwrap()),
                "{ip} should not be Cloudflare"
            );
        }
    }

    #[test]
    fn origin_ca_root_is_the_shipped_certificate() {
        let text = std::str::from_utf8(ORIGIN_CA_ROOT_PEM).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
