//! Policy rules: a [`Rule`] prints as the `ip rule add` arguments that create it; [`add`],
//! [`dump`] and [`del`] are `ip rule add` / `ip rule show` / `ip rule del`.
//!
//! Every rule gets an **explicit priority**. Without one the kernel picks "the first
//! non-zero priority − 1" and accepts the same rule again at the next free number, so a
//! retried ADD leaks duplicates (verified: research/routing-cni.md §1). With one, a repeat is
//! `EEXIST`, which [`add`] treats as done. The numbers reproduce the seed's listing for
//! `net1` (table 100): `from <ip>` at 32764, `to <subnet>` at 32765; each further table
//! takes the two numbers below ([`prefs_of_table`]).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion};

use crate::error::{self, Error, Side};

/// The priority of `from <NIC IP> lookup 100` — the seed's 32764.
pub const FROM_PREF_TABLE_100: u32 = 32764;

/// The `(from, to)` priorities of the rules of policy table `table` (≥ 100):
/// `(32764 − 2·(table − 100), 32765 − 2·(table − 100))`. `None` outside 100..=16_000.
pub fn prefs_of_table(table: u32) -> Option<(u32, u32)> {
    if !(100..=16_000).contains(&table) {
        return None;
    }
    let from = FROM_PREF_TABLE_100 - 2 * (table - 100);
    Some((from, from + 1))
}

/// One policy rule (`action` is always "lookup a table").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    /// `from` selector; `None` = `from all`.
    pub from: Option<IpNet>,
    /// `to` selector.
    pub to: Option<IpNet>,
    /// `lookup <table>`.
    pub table: u32,
    /// `pref <n>`.
    pub pref: u32,
    /// The family when neither selector says it (`from all lookup 500`).
    pub ipv6: bool,
}

impl Rule {
    /// `from <prefix> lookup <table> pref <pref>`.
    pub fn from(prefix: IpNet, table: u32, pref: u32) -> Rule {
        Rule {
            from: Some(prefix),
            to: None,
            table,
            pref,
            ipv6: prefix.addr().is_ipv6(),
        }
    }

    /// `to <prefix> lookup <table> pref <pref>`.
    pub fn to(prefix: IpNet, table: u32, pref: u32) -> Rule {
        Rule {
            from: None,
            to: Some(prefix),
            table,
            pref,
            ipv6: prefix.addr().is_ipv6(),
        }
    }

    /// `from all lookup <table> pref <pref>` in one family.
    pub fn all(ipv6: bool, table: u32, pref: u32) -> Rule {
        Rule {
            from: None,
            to: None,
            table,
            pref,
            ipv6,
        }
    }

    fn family(&self) -> &'static str {
        if self.ipv6 { "-6 " } else { "" }
    }
}

impl fmt::Display for Rule {
    /// `from 10.7.168.173 lookup 100 pref 32764`, `to 10.7.0.0/16 lookup 100 pref 32765`,
    /// `from all lookup 500 pref 1000` (host prefixes without their `/32`, as `ip rule`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = |p: &IpNet| {
            if p.prefix_len() == p.max_prefix_len() {
                p.addr().to_string()
            } else {
                p.to_string()
            }
        };
        match (&self.from, &self.to) {
            (Some(from), Some(to)) => write!(f, "from {} to {}", prefix(from), prefix(to))?,
            (Some(from), None) => write!(f, "from {}", prefix(from))?,
            (None, Some(to)) => write!(f, "to {}", prefix(to))?,
            (None, None) => f.write_str("from all")?,
        }
        write!(f, " lookup {} pref {}", self.table, self.pref)
    }
}

/// `ip rule add <rule>`; `EEXIST` (the same rule at the same priority) is success.
pub async fn add(handle: &Handle, side: Side, rule: &Rule) -> Result<(), Error> {
    let request = handle
        .rule()
        .add()
        .table_id(rule.table)
        .priority(rule.pref)
        // Without an action the kernel stores "none" and every lookup hitting the rule
        // fails with EINVAL (research/routing-cni.md §6.1, pitfall 1).
        .action(RuleAction::ToTable);
    let result = match (rule.from, rule.to, rule.ipv6) {
        (from, to, false) => {
            let mut r = request.v4();
            if let Some(IpNet::V4(p)) = from {
                r = r.source_prefix(p.addr(), p.prefix_len());
            }
            if let Some(IpNet::V4(p)) = to {
                r = r.destination_prefix(p.addr(), p.prefix_len());
            }
            r.execute().await
        }
        (from, to, true) => {
            let mut r = request.v6();
            if let Some(IpNet::V6(p)) = from {
                r = r.source_prefix(p.addr(), p.prefix_len());
            }
            if let Some(IpNet::V6(p)) = to {
                r = r.destination_prefix(p.addr(), p.prefix_len());
            }
            r.execute().await
        }
    };
    error::outcome(result, &[nix::libc::EEXIST], side, || {
        format!("ip {}rule add {rule}", rule.family())
    })
}

/// A rule as dumped, with the message to delete it by.
#[derive(Debug, Clone)]
pub struct InstalledRule {
    /// What it does, when it is a plain `lookup` rule Berth can read; `None` otherwise
    /// (fwmark, iif, goto, … rules are never Berth's).
    pub rule: Option<Rule>,
    message: RuleMessage,
}

/// `ip rule show` and `ip -6 rule show`.
pub async fn dump(handle: &Handle, side: Side) -> Result<Vec<InstalledRule>, Error> {
    let mut rules = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let ipv6 = version == IpVersion::V6;
        let messages: Vec<RuleMessage> =
            error::dump(handle.rule().get(version).execute(), side, || {
                format!("ip {}rule show", if ipv6 { "-6 " } else { "" })
            })
            .await?;
        rules.extend(messages.into_iter().map(|message| InstalledRule {
            rule: read(&message, ipv6),
            message,
        }));
    }
    Ok(rules)
}

fn read(message: &RuleMessage, ipv6: bool) -> Option<Rule> {
    let header = &message.header;
    if header.action != RuleAction::ToTable || header.tos != 0 {
        return None;
    }
    let mut rule = Rule::all(ipv6, u32::from(header.table), 0);
    for attr in &message.attributes {
        match attr {
            RuleAttribute::Source(ip) => rule.from = prefix(*ip, header.src_len),
            RuleAttribute::Destination(ip) => rule.to = prefix(*ip, header.dst_len),
            RuleAttribute::Table(t) => rule.table = *t,
            RuleAttribute::Priority(p) => rule.pref = *p,
            // The kernel sends "-1" (unset) for these with every rule.
            RuleAttribute::SuppressPrefixLen(u32::MAX)
            | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
            // Selectors Berth never writes make the rule someone else's.
            RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::FwMark(_)
            | RuleAttribute::FwMask(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_)
            | RuleAttribute::SuppressPrefixLen(_)
            | RuleAttribute::SuppressIfGroup(_)
            | RuleAttribute::L3MDev(_) => return None,
            _ => {}
        }
    }
    Some(rule)
}

fn prefix(ip: IpAddr, len: u8) -> Option<IpNet> {
    IpNet::new(ip, len).ok()
}

/// `ip rule del` of a dumped rule; one already gone is success.
pub async fn del(handle: &Handle, side: Side, installed: &InstalledRule) -> Result<(), Error> {
    error::outcome(
        handle.rule().del(installed.message.clone()).execute().await,
        &[nix::libc::ENOENT, nix::libc::ESRCH],
        side,
        || match &installed.rule {
            Some(rule) => format!("ip {}rule del {rule}", rule.family()),
            None => "ip rule del".into(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_priorities() {
        assert_eq!(prefs_of_table(100), Some((32764, 32765)));
        assert_eq!(prefs_of_table(101), Some((32762, 32763)));
        assert_eq!(prefs_of_table(99), None);
        assert!(prefs_of_table(16_000).unwrap().0 > 0);
    }

    #[test]
    fn rules_print_like_ip_rule() {
        assert_eq!(
            Rule::from("10.7.168.173/32".parse().unwrap(), 100, 32764).to_string(),
            "from 10.7.168.173 lookup 100 pref 32764"
        );
        assert_eq!(
            Rule::to("10.7.0.0/16".parse().unwrap(), 100, 32765).to_string(),
            "to 10.7.0.0/16 lookup 100 pref 32765"
        );
        assert_eq!(
            Rule::all(true, 500, 1000).to_string(),
            "from all lookup 500 pref 1000"
        );
        assert!(Rule::from("fd00:7::173/128".parse().unwrap(), 100, 32764).ipv6);
    }
}
