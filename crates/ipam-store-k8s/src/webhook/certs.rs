//! The webhook's certificates: a CA of its own, a serving certificate it signs, both kept in one
//! Secret so every replica serves the same chain and the API server trusts it through the
//! `caBundle` of the webhook configurations.
//!
//! | Secret key | what it holds |
//! |---|---|
//! | `ca.crt`, `ca.key` | the CA (valid ten times as long as a serving certificate) |
//! | `ca-previous.crt` | the CA before the last CA renewal, kept in the bundle until it expires |
//! | `tls.crt`, `tls.key` | the serving certificate, for every host the webhook is reached by |
//!
//! Renewal happens when a certificate has less than `renew_before` left, or no longer names
//! every host. A CA is renewed when it would expire before a serving certificate made now; the
//! old one stays in the `caBundle` while it is valid, so replicas still serving a certificate
//! it signed are trusted until they reload.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::Error;

/// The Secret keys (see the module documentation).
const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const CA_PREVIOUS: &str = "ca-previous.crt";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

/// The CA and serving certificate, in PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Material {
    pub ca_crt: String,
    pub ca_key: String,
    pub ca_previous: Option<String>,
    pub tls_crt: String,
    pub tls_key: String,
}

/// What a certificate says about itself, as far as renewal cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Seconds since the epoch.
    pub not_before: i64,
    /// Seconds since the epoch.
    pub not_after: i64,
    /// DNS names and IP addresses, as text.
    pub hosts: Vec<String>,
    /// The serial, in hex: tells two certificates apart.
    pub serial: String,
}

/// Reads the first certificate of a PEM text.
pub(crate) fn facts(pem: &str) -> Result<Facts, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => hosts.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    hosts.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    Ok(Facts {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        hosts,
        serial: cert.raw_serial_as_string(),
    })
}

/// How long certificates live and when they are renewed.
#[derive(Clone, Debug)]
pub(crate) struct Lifetimes {
    /// A serving certificate's life; a CA lives ten times as long.
    pub validity: Duration,
    /// Renew a certificate with less than this left.
    pub renew_before: Duration,
}

impl Lifetimes {
    fn ca_validity(&self) -> Duration {
        self.validity.saturating_mul(10)
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// What `material` needs to serve `hosts` for at least `renew_before` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing: it is good.
    Nothing,
    /// A new serving certificate from the same CA.
    Certificate,
    /// A new CA, and a serving certificate from it.
    Authority,
}

pub(crate) fn need(material: &Material, hosts: &[String], life: &Lifetimes) -> Need {
    let (Ok(ca), Ok(tls)) = (facts(&material.ca_crt), facts(&material.tls_crt)) else {
        return Need::Authority;
    };
    let now = now();
    if KeyPair::from_pem(&material.ca_key).is_err()
        || ca.not_after < now + secs(life.validity) + secs(life.renew_before)
    {
        return Need::Authority;
    }
    let names_all = hosts.iter().all(|h| tls.hosts.contains(h));
    if KeyPair::from_pem(&material.tls_key).is_err()
        || !names_all
        || tls.not_before > now + 60
        || tls.not_after < now + secs(life.renew_before)
    {
        return Need::Certificate;
    }
    Need::Nothing
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "berth");
    dn
}

fn window(params: &mut CertificateParams, validity: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A minute of slack for clocks a little behind ours.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::seconds(secs(validity));
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Certificate(format!("{what}: {e}"))
}

/// Renews what `need` says, keeping the rest of `old`.
pub(crate) fn renew(
    old: Option<&Material>,
    need: Need,
    hosts: &[String],
    life: &Lifetimes,
) -> Result<Material, Error> {
    let (ca_crt, ca_key, ca_previous) = match (old, need) {
        (Some(old), Need::Nothing | Need::Certificate) => (
            old.ca_crt.clone(),
            old.ca_key.clone(),
            old.ca_previous.clone(),
        ),
        (old, _) => {
            let key = KeyPair::generate().map_err(|e| tls_error("new CA key", e))?;
            let mut params = CertificateParams::default();
            params.distinguished_name = name("berth-webhook-ca");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            window(&mut params, life.ca_validity());
            let cert = params
                .self_signed(&key)
                .map_err(|e| tls_error("new CA", e))?;
            // The old CA stays trusted while it is valid: replicas may still serve its leaf.
            let previous = old
                .map(|o| o.ca_crt.clone())
                .filter(|pem| facts(pem).is_ok_and(|f| f.not_after > now()));
            (cert.pem(), key.serialize_pem(), previous)
        }
    };
    let ca_signing = KeyPair::from_pem(&ca_key).map_err(|e| tls_error("the CA key", e))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_crt, ca_signing)
        .map_err(|e| tls_error("the CA certificate", e))?;
    let key = KeyPair::generate().map_err(|e| tls_error("new serving key", e))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(hosts.first().map_or("berth-webhook", String::as_str));
    params.subject_alt_names = hosts
        .iter()
        .map(|h| match h.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => h
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| tls_error(&format!("host {h:?}"), e)),
        })
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    window(&mut params, life.validity);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| tls_error("new serving certificate", e))?;
    Ok(Material {
        ca_crt,
        ca_key,
        ca_previous,
        tls_crt: cert.pem(),
        tls_key: key.serialize_pem(),
    })
}

impl Material {
    /// The PEM bundle the API server trusts: the CA, and the previous one while it is valid.
    pub(crate) fn ca_bundle(&self) -> String {
        let mut bundle = self.ca_crt.clone();
        if let Some(previous) = &self.ca_previous
            && facts(previous).is_ok_and(|f| f.not_after > now())
        {
            if !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            bundle.push_str(previous);
        }
        bundle
    }

    fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let text = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        Some(Material {
            ca_crt: text(CA_CRT)?,
            ca_key: text(CA_KEY)?,
            ca_previous: text(CA_PREVIOUS),
            tls_crt: text(TLS_CRT)?,
            tls_key: text(TLS_KEY)?,
        })
    }

    fn into_data(self) -> std::collections::BTreeMap<String, ByteString> {
        let mut data = std::collections::BTreeMap::new();
        let mut put = |k: &str, v: String| {
            data.insert(k.to_string(), ByteString(v.into_bytes()));
        };
        put(CA_CRT, self.ca_crt);
        put(CA_KEY, self.ca_key);
        if let Some(p) = self.ca_previous {
            put(CA_PREVIOUS, p);
        }
        put(TLS_CRT, self.tls_crt);
        put(TLS_KEY, self.tls_key);
        data
    }
}

/// Reads the Secret `name` and returns material good for `hosts`: the stored one when it is,
/// otherwise renewed and written back. Replicas racing on it agree: a create or update that
/// loses (AlreadyExists, Conflict) starts over from what the winner wrote.
pub(crate) async fn ensure(
    secrets: &Api<Secret>,
    name: &str,
    hosts: &[String],
    life: &Lifetimes,
) -> Result<Material, Error> {
    let api_error = |what: &str, e: kube::Error| Error::Api {
        action: format!("{what} the Secret {name}"),
        source: e,
    };
    loop {
        let stored = secrets
            .get_opt(name)
            .await
            .map_err(|e| api_error("read", e))?;
        let material = stored.as_ref().and_then(Material::from_secret);
        let need = material
            .as_ref()
            .map_or(Need::Authority, |m| need(m, hosts, life));
        if need == Need::Nothing
            && let Some(m) = material
        {
            return Ok(m);
        }
        let fresh = renew(material.as_ref(), need, hosts, life)?;
        let written = match stored {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        labels: Some(
                            [(
                                "app.kubernetes.io/managed-by".to_string(),
                                "berth".to_string(),
                            )]
                            .into(),
                        ),
                        ..Default::default()
                    },
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(fresh.clone().into_data()),
                    ..Default::default()
                };
                secrets.create(&PostParams::default(), &secret).await
            }
            Some(mut secret) => {
                secret.data = Some(fresh.clone().into_data());
                secrets.replace(name, &PostParams::default(), &secret).await
            }
        };
        match written {
            Ok(_) => return Ok(fresh),
            // Another replica wrote first: use what it wrote, if it is good.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(api_error("write", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(validity: u64, renew_before: u64) -> Lifetimes {
        Lifetimes {
            validity: Duration::from_secs(validity),
            renew_before: Duration::from_secs(renew_before),
        }
    }

    fn hosts() -> Vec<String> {
        vec!["127.0.0.1".into(), "berth-webhook.kube-system.svc".into()]
    }

    #[test]
    fn fresh_material_is_good_and_names_every_host() {
        let life = life(86_400, 3_600);
        let m = renew(None, Need::Authority, &hosts(), &life).unwrap();
        assert_eq!(need(&m, &hosts(), &life), Need::Nothing);
        let tls = facts(&m.tls_crt).unwrap();
        assert_eq!(tls.hosts, hosts());
        assert!(tls.not_after - tls.not_before >= 86_400);
        let ca = facts(&m.ca_crt).unwrap();
        assert!(ca.not_after - ca.not_before >= 864_000);
        assert_eq!(m.ca_bundle(), m.ca_crt);
    }

    #[test]
    fn a_certificate_near_its_end_is_renewed_from_the_same_ca() {
        // A serving certificate for 100 s, so a CA for 1,000 s.
        let m = renew(None, Need::Authority, &hosts(), &life(100, 10)).unwrap();
        assert_eq!(need(&m, &hosts(), &life(100, 10)), Need::Nothing);
        // 200 s before its end is now: the certificate is due, its CA is not.
        let due = life(100, 200);
        assert_eq!(need(&m, &hosts(), &due), Need::Certificate);
        // A CA that would end before a new 900 s certificate renewed 200 s early is due too.
        assert_eq!(need(&m, &hosts(), &life(900, 200)), Need::Authority);
        let renewed = renew(Some(&m), Need::Certificate, &hosts(), &due).unwrap();
        assert_eq!(renewed.ca_crt, m.ca_crt);
        assert_ne!(
            facts(&renewed.tls_crt).unwrap().serial,
            facts(&m.tls_crt).unwrap().serial
        );
    }

    #[test]
    fn a_new_host_needs_a_new_certificate() {
        let life = life(86_400, 3_600);
        let m = renew(None, Need::Authority, &hosts(), &life).unwrap();
        let more = [hosts(), vec!["10.0.0.1".into()]].concat();
        assert_eq!(need(&m, &more, &life), Need::Certificate);
    }

    #[test]
    fn a_renewed_ca_keeps_the_old_one_in_the_bundle() {
        let life = life(86_400, 3_600);
        let m = renew(None, Need::Authority, &hosts(), &life).unwrap();
        let renewed = renew(Some(&m), Need::Authority, &hosts(), &life).unwrap();
        assert_ne!(renewed.ca_crt, m.ca_crt);
        assert_eq!(renewed.ca_previous.as_deref(), Some(m.ca_crt.as_str()));
        assert!(renewed.ca_bundle().contains(&m.ca_crt));
        assert!(renewed.ca_bundle().starts_with(&renewed.ca_crt));
    }

    #[test]
    fn garbage_needs_everything() {
        let life = life(86_400, 3_600);
        let m = Material {
            ca_crt: "x".into(),
            ca_key: "y".into(),
            ca_previous: None,
            tls_crt: "z".into(),
            tls_key: "w".into(),
        };
        assert_eq!(need(&m, &hosts(), &life), Need::Authority);
    }
}
