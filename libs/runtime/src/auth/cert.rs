//! What a verified mTLS client certificate says about its holder: the subject as an RFC 4514
//! string and the subject alternative names (DNS, URI, email), which policy principals are
//! matched against (`tls_subject`, `tls_san`).
//!
//! The TLS handshake already verified the certificate against `--tls-client-ca-file`; this only
//! reads the leaf (with `x509-parser`).

use x509_parser::{
    certificate::X509Certificate,
    extensions::GeneralName,
    objects::{oid_registry, oid2abbrev},
    prelude::FromDer,
    x509::X509Name,
};

/// The names of one client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject in RFC 4514 form (`CN=billing,O=acme`: most specific RDN first, no spaces).
    pub subject: String,
    /// DNS names, URIs (e.g. SPIFFE ids) and email addresses among the SANs, as written.
    pub sans: Vec<String>,
}

impl CertIdentity {
    /// Reads the leaf certificate `der`; `None` if it does not parse (it cannot match anyone).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = rfc4514(cert.subject());
        let sans = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => Some(s.to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(Self { subject, sans })
    }
}

/// The RFC 4514 string of a distinguished name: RDNs in reverse order of the encoding, joined by
/// `,`; multi-valued RDNs joined by `+`; well-known attribute types by short name (CN, O, OU, C,
/// L, ST, DC...), others as dotted OIDs; non-string values as `#` and the hex of their bytes.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let key =
                        oid2abbrev(oid, oid_registry()).map(str::to_string).unwrap_or_else(|_| oid.to_id_string());
                    let value = match attr.as_str() {
                        Ok(s) => escape(s),
                        Err(_) => format!("#{}", super::policy::hex(attr.as_slice())),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// Escapes an attribute value as RFC 4514 section 2.4 asks.
fn escape(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A subject as written in a policy file, in a form comparable with [`rfc4514`]'s: spaces
/// around `,`, `+` and `=` dropped and attribute types upper-cased, so `CN=billing, O=acme`
/// and `cn=billing,o=acme` name the same subject. Values stay case-sensitive.
pub fn normalize_subject(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    let mut component = String::new();
    let mut chars = subject.chars();
    let flush = |component: &mut String, out: &mut String| {
        let text = std::mem::take(component);
        match text.split_once('=') {
            Some((key, value)) => {
                out.push_str(&key.trim().to_ascii_uppercase());
                out.push('=');
                out.push_str(value.trim());
            }
            None => out.push_str(text.trim()),
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                component.push(c);
                if let Some(escaped) = chars.next() {
                    component.push(escaped);
                }
            }
            ',' | '+' => {
                flush(&mut component, &mut out);
                out.push(c);
            }
            _ => component.push(c),
        }
    }
    flush(&mut component, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_compared_in_one_form() {
        assert_eq!(normalize_subject("CN=billing, O=acme"), "CN=billing,O=acme");
        assert_eq!(normalize_subject(" cn = billing ,o=acme"), "CN=billing,O=acme");
        assert_eq!(normalize_subject(r"CN=a\, b,O=x"), r"CN=a\, b,O=x");
        assert_eq!(normalize_subject("CN=Billing"), "CN=Billing", "values keep their case");
    }

    #[test]
    fn values_are_escaped() {
        assert_eq!(escape("a,b"), r"a\,b");
        assert_eq!(escape("#x "), r"\#x\ ");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn a_certificate_yields_its_subject_and_sans() {
        use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
        let mut params = CertificateParams::new(vec!["billing.acme.svc".to_string()]).unwrap();
        params.subject_alt_names.push(SanType::URI("spiffe://acme/billing".try_into().unwrap()));
        params.subject_alt_names.push(SanType::Rfc822Name("ops@acme.example".try_into().unwrap()));
        // Encoded most significant first (O, then CN); RFC 4514 writes it the other way round.
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "acme");
        params.distinguished_name.push(DnType::CommonName, "billing");
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let identity = CertIdentity::from_der(cert.der()).unwrap();
        assert_eq!(identity.subject, "CN=billing,O=acme");
        assert_eq!(identity.sans, ["billing.acme.svc", "spiffe://acme/billing", "ops@acme.example"]);
        assert!(CertIdentity::from_der(b"not a certificate").is_none());
    }
}
