//! IP conflict and gateway detection: ARP and NDP on the pod's NIC before ADD answers.
//!
//! When `berth-ipam` runs, the main plugin (macvlan, ipvlan, SR-IOV) has made the pod's NIC
//! in `CNI_NETNS` and it has no address yet. Once the IPs are allocated, and only for the
//! checks the network enables ([`Target`]), the probe:
//!
//! 1. sets the NIC up itself (Debian's macvlan calls IPAM before it does) and waits, bounded,
//!    for its carrier;
//! 2. **conflict**: sends, for each address, an ARP probe (RFC 5227: sender IP `0.0.0.0`) or a
//!    duplicate-address-detection neighbour solicitation (RFC 4862: source `::`, to the
//!    target's solicited-node group), [`Timing::tries`] times, listening [`Timing::timeout`]
//!    after each round. Any ARP packet whose sender is the address, or any neighbour
//!    advertisement for it, from another MAC is a conflict ([`Error::Conflict`]). Silence is
//!    success, so this check always costs `tries × timeout`;
//! 3. **gateway** (only after the conflict check, so a probe never teaches a neighbour an
//!    address that turned out to be someone else's — Spiderpool #4475): an ARP request or a
//!    neighbour solicitation from the address to its gateway, the same tries and timeout; the
//!    first answer ends the wait, no answer is [`Error::GatewayUnreachable`];
//! 4. announces each address once: a gratuitous ARP (an RFC 5227 announcement) or an
//!    unsolicited neighbour advertisement with the override flag. The kernel's own
//!    announcement on link up (`arp_notify`) cannot do it: the NIC is already up when the
//!    main plugin adds the address.
//!
//! Frames are raw Ethernet on an `AF_PACKET` socket bound to the NIC ([`pnet_datalink`]: the
//! socket calls are its `unsafe`, not ours), opened on a thread inside the pod's namespace
//! ([`Netns::run`]). The probing logic runs on any [`Wire`], so the unit tests below drive it
//! with a scripted segment.
//!
//! Defaults ([`Timing::default`]) are Spiderpool's: 3 tries, 100 ms each. A local segment
//! answers ARP and NDP in well under a millisecond, so 100 ms leaves room for a busy peer;
//! 3 tries survive a lost frame.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_cni::error::BoxError;
use netns_routing::error::Side;
use netns_routing::link::{self, Links, Mac};
use netns_routing::netns::Netns;

/// How long each round listens for answers (Spiderpool's 100 ms).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// Rounds of probes or requests per check (Spiderpool's 3).
pub const DEFAULT_TRIES: u32 = 3;
/// How long to wait for the NIC's carrier after setting it up before probing anyway.
pub const DEFAULT_CARRIER_WAIT: Duration = Duration::from_secs(2);

/// Which checks run: the network's `enable_ip_conflict_detection` and
/// `enable_gateway_detection`, or, where the network config says nothing, the agent's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Detection {
    /// Probe each address before answering.
    pub ip_conflict: bool,
    /// Ask each address's gateway before answering.
    pub gateway: bool,
}

impl Detection {
    /// Whether any check runs.
    pub fn any(&self) -> bool {
        self.ip_conflict || self.gateway
    }
}

/// The bounds of each check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long each round listens.
    pub timeout: Duration,
    /// Rounds per check (at least one is made).
    pub tries: u32,
    /// How long to wait for carrier after setting the NIC up.
    pub carrier_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            timeout: DEFAULT_TIMEOUT,
            tries: DEFAULT_TRIES,
            carrier_wait: DEFAULT_CARRIER_WAIT,
        }
    }
}

/// One address of the NIC and what to check for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The address ADD is about to answer.
    pub address: IpAddr,
    /// Probe it for a conflict.
    pub conflict: bool,
    /// Ask this gateway (the address's pool gateway), from the address.
    pub gateway: Option<IpAddr>,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another host on the segment answered for the address.
    #[error(
        "IP conflict on {nic}: {ip} is already in use by the host with MAC {mac} (it answered {})",
        if ip.is_ipv4() { "an ARP probe" } else { "a neighbour solicitation" }
    )]
    Conflict {
        /// The pod interface.
        nic: String,
        /// The address.
        ip: IpAddr,
        /// The MAC that answered.
        mac: Mac,
    },
    /// The gateway did not answer.
    #[error(
        "gateway {gateway} is unreachable from {nic}: {tries} {} from {from} got no answer \
         within {}ms each; check the pool's gateway and the NIC's parent and VLAN",
        if gateway.is_ipv4() { "ARP request(s)" } else { "neighbour solicitation(s)" },
        timeout.as_millis()
    )]
    GatewayUnreachable {
        /// The pod interface.
        nic: String,
        /// The gateway asked.
        gateway: IpAddr,
        /// The address it was asked from.
        from: IpAddr,
        /// Requests sent.
        tries: u32,
        /// How long each was waited for.
        timeout: Duration,
    },
    /// The probe could not run (namespace, link, packet socket).
    #[error("cannot probe {nic} in {}: {step}: {source}", netns.display())]
    Setup {
        /// The pod interface.
        nic: String,
        /// `CNI_NETNS`.
        netns: PathBuf,
        /// What failed.
        step: String,
        /// Why.
        #[source]
        source: BoxError,
    },
}

/// Sets `nic` in the namespace `netns` up, runs the checks `targets` ask for with `timing`,
/// and announces the addresses ([module docs](self)). Needs a tokio runtime (the netlink
/// connection runs on it; the probe itself on a blocking thread).
pub async fn probe(
    netns: &Path,
    nic: &str,
    targets: &[Target],
    timing: &Timing,
) -> Result<(), Error> {
    let setup = |step: &str, source: BoxError| Error::Setup {
        nic: nic.to_owned(),
        netns: netns.to_path_buf(),
        step: step.to_owned(),
        source,
    };
    let ns = Netns::open(netns).map_err(|e| setup("opening the namespace", e.into()))?;
    let handle = ns
        .netlink()
        .map_err(|e| setup("opening netlink", e.into()))?;
    let links = Links::dump(&handle, Side::Pod)
        .await
        .map_err(|e| setup("listing links", e.into()))?;
    let link = links
        .get(nic)
        .ok_or_else(|| setup("finding the link", "no such link in the namespace".into()))?;
    link::set_up(&handle, Side::Pod, link)
        .await
        .map_err(|e| setup("setting the link up", e.into()))?;
    let (name, targets, timing) = (nic.to_owned(), targets.to_vec(), *timing);
    let work = tokio::task::spawn_blocking(move || {
        ns.run(|| {
            let mut wire = PacketWire::open(&name, timing.carrier_wait)
                .map_err(|e| ("opening a packet socket on the link", BoxError::from(e)))?;
            Ok(run(&mut wire, &name, &targets, &timing))
        })
    });
    match work.await {
        Ok(Ok(Ok(Err(Error::Setup { step, source, .. })))) => Err(setup(&step, source)),
        Ok(Ok(Ok(outcome))) => outcome,
        Ok(Ok(Err((step, source)))) => Err(setup(step, source)),
        Ok(Err(e)) => Err(setup("entering the namespace", e.into())),
        Err(e) => Err(setup("running the probe", e.into())),
    }
}

/// A NIC as the probe sees it: Ethernet frames out and in.
pub trait Wire {
    /// The NIC's MAC.
    fn mac(&self) -> Mac;
    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()>;
    /// The next frame received before `deadline`; `None` once it has passed.
    fn recv(&mut self, deadline: Instant) -> std::io::Result<Option<Vec<u8>>>;
}

/// The checks on `wire` (steps 2–4 of the [module docs](self)). Its [`Error::Setup`] names
/// no namespace ([`probe`] fills it in).
pub fn run(
    wire: &mut impl Wire,
    nic: &str,
    targets: &[Target],
    timing: &Timing,
) -> Result<(), Error> {
    let io = |step: &str, e: std::io::Error| Error::Setup {
        nic: nic.to_owned(),
        netns: PathBuf::new(),
        step: step.to_owned(),
        source: e.into(),
    };
    let mac = wire.mac();
    let tries = timing.tries.max(1);

    let suspects: Vec<IpAddr> = targets
        .iter()
        .filter(|t| t.conflict)
        .map(|t| t.address)
        .collect();
    if !suspects.is_empty() {
        for _ in 0..tries {
            for ip in &suspects {
                wire.send(&probe_frame(mac, *ip))
                    .map_err(|e| io("sending a probe", e))?;
            }
            let mut found = None;
            listen(wire, timing.timeout, |seen| {
                found = seen
                    .claim()
                    .filter(|(ip, by)| *by != mac && suspects.contains(ip));
                found.is_some()
            })
            .map_err(|e| io("reading answers", e))?;
            if let Some((ip, by)) = found {
                return Err(Error::Conflict {
                    nic: nic.to_owned(),
                    ip,
                    mac: by,
                });
            }
        }
    }

    // Each gateway once, asked from the first address of its family.
    let mut pending: Vec<(IpAddr, IpAddr)> = Vec::new();
    for t in targets {
        if let Some(gw) = t.gateway
            && !pending.iter().any(|(g, _)| *g == gw)
        {
            pending.push((gw, t.address));
        }
    }
    let mut asked = 0;
    while !pending.is_empty() && asked < tries {
        asked += 1;
        for (gw, from) in &pending {
            wire.send(&request_frame(mac, *from, *gw))
                .map_err(|e| io("sending a gateway request", e))?;
        }
        listen(wire, timing.timeout, |seen| {
            if let Some((ip, by)) = seen.claim()
                && by != mac
            {
                pending.retain(|(gw, _)| *gw != ip);
            }
            pending.is_empty()
        })
        .map_err(|e| io("reading answers", e))?;
    }
    if let Some((gateway, from)) = pending.first() {
        return Err(Error::GatewayUnreachable {
            nic: nic.to_owned(),
            gateway: *gateway,
            from: *from,
            tries: asked,
            timeout: timing.timeout,
        });
    }

    for t in targets {
        wire.send(&announce_frame(mac, t.address))
            .map_err(|e| io("sending an announcement", e))?;
    }
    Ok(())
}

/// Feeds every frame of the next `window` to `seen` until it returns true.
fn listen(
    wire: &mut impl Wire,
    window: Duration,
    mut seen: impl FnMut(&Seen) -> bool,
) -> std::io::Result<()> {
    let deadline = Instant::now() + window;
    while let Some(frame) = wire.recv(deadline)? {
        if let Some(s) = Seen::parse(&frame)
            && seen(&s)
        {
            break;
        }
    }
    Ok(())
}

/// The NIC's packet socket (`AF_PACKET`, `ETH_P_ALL`, not promiscuous).
struct PacketWire {
    mac: Mac,
    tx: Box<dyn pnet_datalink::DataLinkSender>,
    rx: Box<dyn pnet_datalink::DataLinkReceiver>,
}

/// How long one read waits before the deadline is looked at again.
const READ_SLICE: Duration = Duration::from_millis(5);

impl PacketWire {
    /// Opens the socket on `name` in the calling thread's namespace, after waiting up to
    /// `carrier_wait` for the link's carrier (frames sent before it are lost).
    fn open(name: &str, carrier_wait: Duration) -> std::io::Result<PacketWire> {
        let started = Instant::now();
        let iface = loop {
            let iface = pnet_datalink::interfaces()
                .into_iter()
                .find(|i| i.name == name)
                .ok_or_else(|| std::io::Error::other(format!("no link {name}")))?;
            if iface.is_lower_up() || started.elapsed() >= carrier_wait {
                if !iface.is_lower_up() {
                    tracing::warn!(nic = name, waited = ?carrier_wait, "no carrier: probing anyway");
                }
                break iface;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mac = iface
            .mac
            .map(|m| Mac(m.octets()))
            .ok_or_else(|| std::io::Error::other(format!("{name} has no MAC address")))?;
        let config = pnet_datalink::Config {
            read_timeout: Some(READ_SLICE),
            promiscuous: false,
            ..pnet_datalink::Config::default()
        };
        match pnet_datalink::channel(&iface, config)? {
            pnet_datalink::Channel::Ethernet(tx, rx) => Ok(PacketWire { mac, tx, rx }),
            _ => Err(std::io::Error::other("not an Ethernet channel")),
        }
    }
}

impl Wire for PacketWire {
    fn mac(&self) -> Mac {
        self.mac
    }

    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.tx
            .send_to(frame, None)
            .unwrap_or_else(|| Err(std::io::Error::other("frame larger than the send buffer")))
    }

    fn recv(&mut self, deadline: Instant) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::ErrorKind;
        while Instant::now() < deadline {
            match self.rx.next() {
                Ok(frame) => return Ok(Some(frame.to_vec())),
                // The read slice passed, or a signal (Spiderpool #4975): look at the deadline.
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

// ---- frames ----------------------------------------------------------------------------

const ETH_ARP: u16 = 0x0806;
const ETH_IPV6: u16 = 0x86dd;
const BROADCAST: Mac = Mac([0xff; 6]);
const ARP_REQUEST: u16 = 1;
const ICMPV6: u8 = 58;
const NEIGHBOUR_SOLICITATION: u8 = 135;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The conflict probe for `ip`: an ARP probe or a DAD neighbour solicitation.
pub fn probe_frame(mac: Mac, ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => arp_frame(mac, Ipv4Addr::UNSPECIFIED, ip),
        IpAddr::V6(ip) => solicitation_frame(mac, Ipv6Addr::UNSPECIFIED, ip),
    }
}

/// The question to `gateway` from `from`: an ARP request or a neighbour solicitation.
pub fn request_frame(mac: Mac, from: IpAddr, gateway: IpAddr) -> Vec<u8> {
    match (from, gateway) {
        (IpAddr::V4(from), IpAddr::V4(gw)) => arp_frame(mac, from, gw),
        (IpAddr::V6(from), IpAddr::V6(gw)) => solicitation_frame(mac, from, gw),
        // A pool's gateway is of the pool's family; an odd pair asks from the unspecified
        // address rather than not at all.
        (_, gw) => probe_frame(mac, gw),
    }
}

/// The announcement of `ip`: a gratuitous ARP or an unsolicited advertisement.
pub fn announce_frame(mac: Mac, ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => arp_frame(mac, ip, ip),
        IpAddr::V6(ip) => advertisement_frame(mac, ip),
    }
}

fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload_len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A broadcast ARP request from `sender` (`0.0.0.0` for a probe) for `target`.
fn arp_frame(mac: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet(BROADCAST, mac, ETH_ARP, 28);
    f.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&ARP_REQUEST.to_be_bytes());
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// A neighbour solicitation for `target` from `source` to its solicited-node group; with
/// the source link-layer option unless `source` is `::` (RFC 4861 §4.3).
fn solicitation_frame(mac: Mac, source: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut icmp = vec![NEIGHBOUR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    if !source.is_unspecified() {
        icmp.extend_from_slice(&[OPT_SOURCE_LL, 1]);
        icmp.extend_from_slice(&mac.0);
    }
    ipv6_frame(mac, multicast_mac(group), source, group, icmp)
}

/// An unsolicited neighbour advertisement of `ip` to all nodes, override flag set.
fn advertisement_frame(mac: Mac, ip: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![NEIGHBOUR_ADVERTISEMENT, 0, 0, 0, 0x20, 0, 0, 0];
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[OPT_TARGET_LL, 1]);
    icmp.extend_from_slice(&mac.0);
    ipv6_frame(mac, multicast_mac(ALL_NODES), ip, ALL_NODES, icmp)
}

fn multicast_mac(group: Ipv6Addr) -> Mac {
    let g = group.octets();
    Mac([0x33, 0x33, g[12], g[13], g[14], g[15]])
}

/// `icmp` in an IPv6 packet (hop limit 255, as NDP requires) in an Ethernet frame, its
/// checksum filled in.
fn ipv6_frame(mac: Mac, dst_mac: Mac, src: Ipv6Addr, dst: Ipv6Addr, mut icmp: Vec<u8>) -> Vec<u8> {
    let sum = icmpv6_checksum(src, dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let len = u16::try_from(icmp.len()).expect("an NDP message is short");
    let mut f = ethernet(dst_mac, mac, ETH_IPV6, 40 + icmp.len());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[ICMPV6, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// RFC 4443 §2.3: the one's complement sum over the pseudo-header and the message.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&u32::try_from(icmp.len()).unwrap_or(u32::MAX).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What a received frame says, as far as the checks care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// An ARP packet (any operation).
    Arp {
        /// Sender hardware address.
        sha: Mac,
        /// Sender protocol address.
        spa: Ipv4Addr,
    },
    /// A neighbour advertisement.
    Advertisement {
        /// The target link-layer option, else the frame's source.
        mac: Mac,
        /// The address advertised.
        target: Ipv6Addr,
    },
}

impl Seen {
    /// Parses an Ethernet frame; `None` for anything else.
    pub fn parse(frame: &[u8]) -> Option<Seen> {
        let src = Mac(frame.get(6..12)?.try_into().ok()?);
        let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
        let body = &frame[14..];
        match ethertype {
            ETH_ARP => {
                // Ethernet/IPv4 only.
                if body.get(0..6)? != [0, 1, 8, 0, 6, 4] {
                    return None;
                }
                Some(Seen::Arp {
                    sha: Mac(body.get(8..14)?.try_into().ok()?),
                    spa: <[u8; 4]>::try_from(body.get(14..18)?).ok()?.into(),
                })
            }
            ETH_IPV6 => {
                if body.first()? >> 4 != 6 || *body.get(6)? != ICMPV6 {
                    return None;
                }
                let icmp = body.get(40..)?;
                if *icmp.first()? != NEIGHBOUR_ADVERTISEMENT {
                    return None;
                }
                let target: [u8; 16] = icmp.get(8..24)?.try_into().ok()?;
                let mut mac = src;
                let mut options = &icmp[24..];
                while let [kind, len, ..] = *options {
                    let end = usize::from(len) * 8;
                    if end == 0 || options.len() < end {
                        break;
                    }
                    if kind == OPT_TARGET_LL && end >= 8 {
                        mac = Mac(options[2..8].try_into().ok()?);
                    }
                    options = &options[end..];
                }
                Some(Seen::Advertisement {
                    mac,
                    target: target.into(),
                })
            }
            _ => None,
        }
    }

    /// "This MAC holds this address", if the frame says so (an ARP probe, whose sender is
    /// `0.0.0.0`, claims nothing).
    pub fn claim(&self) -> Option<(IpAddr, Mac)> {
        match *self {
            Seen::Arp { sha, spa } => (!spa.is_unspecified()).then_some((IpAddr::V4(spa), sha)),
            Seen::Advertisement { mac, target } => Some((IpAddr::V6(target), mac)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const POD: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
    const OTHER: Mac = Mac([0x02, 0, 0, 0, 0, 0x99]);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A segment in a script: what answers which frame.
    struct Segment {
        holders: Vec<(IpAddr, Mac)>,
        sent: Vec<Vec<u8>>,
        inbox: VecDeque<Vec<u8>>,
    }

    impl Segment {
        fn new(holders: &[(&str, Mac)]) -> Segment {
            Segment {
                holders: holders.iter().map(|(a, m)| (ip(a), *m)).collect(),
                sent: Vec::new(),
                inbox: VecDeque::new(),
            }
        }

        /// The addresses the frames sent asked about, in order.
        fn asked(&self) -> Vec<String> {
            self.sent.iter().map(|f| describe(f)).collect()
        }
    }

    /// `probe 10.0.0.5`, `who-has 10.0.0.1 tell 10.0.0.5`, `announce 10.0.0.5`, `ns fd00::5 from ::`.
    fn describe(f: &[u8]) -> String {
        match u16::from_be_bytes([f[12], f[13]]) {
            ETH_ARP => {
                let spa = Ipv4Addr::from(<[u8; 4]>::try_from(&f[28..32]).unwrap());
                let tpa = Ipv4Addr::from(<[u8; 4]>::try_from(&f[38..42]).unwrap());
                if spa.is_unspecified() {
                    format!("probe {tpa}")
                } else if spa == tpa {
                    format!("announce {tpa}")
                } else {
                    format!("who-has {tpa} tell {spa}")
                }
            }
            _ => {
                let src = Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap());
                let target = Ipv6Addr::from(<[u8; 16]>::try_from(&f[62..78]).unwrap());
                match f[54] {
                    NEIGHBOUR_SOLICITATION => format!("ns {target} from {src}"),
                    _ => format!("na {target}"),
                }
            }
        }
    }

    impl Wire for Segment {
        fn mac(&self) -> Mac {
            POD
        }

        fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
            self.sent.push(frame.to_vec());
            // Our own frame comes back on an ETH_P_ALL socket.
            self.inbox.push_back(frame.to_vec());
            let asked = match u16::from_be_bytes([frame[12], frame[13]]) {
                ETH_ARP => IpAddr::V4(<[u8; 4]>::try_from(&frame[38..42]).unwrap().into()),
                _ if frame[54] == NEIGHBOUR_SOLICITATION => {
                    IpAddr::V6(<[u8; 16]>::try_from(&frame[62..78]).unwrap().into())
                }
                _ => return Ok(()),
            };
            for (held, by) in &self.holders {
                if *held == asked {
                    self.inbox.push_back(announce_frame(*by, *held));
                }
            }
            Ok(())
        }

        fn recv(&mut self, _deadline: Instant) -> std::io::Result<Option<Vec<u8>>> {
            Ok(self.inbox.pop_front())
        }
    }

    fn target(a: &str, conflict: bool, gw: Option<&str>) -> Target {
        Target {
            address: ip(a),
            conflict,
            gateway: gw.map(ip),
        }
    }

    #[test]
    fn a_quiet_segment_gets_three_probes_then_the_gateway_question_then_announcements() {
        let mut seg = Segment::new(&[("10.0.0.1", OTHER), ("fd00::1", OTHER)]);
        let targets = [
            target("10.0.0.5", true, Some("10.0.0.1")),
            target("fd00::5", true, Some("fd00::1")),
        ];
        run(&mut seg, "eth0", &targets, &Timing::default()).unwrap();
        assert_eq!(
            seg.asked(),
            [
                "probe 10.0.0.5",
                "ns fd00::5 from ::",
                "probe 10.0.0.5",
                "ns fd00::5 from ::",
                "probe 10.0.0.5",
                "ns fd00::5 from ::",
                "who-has 10.0.0.1 tell 10.0.0.5",
                "ns fd00::1 from fd00::5",
                "announce 10.0.0.5",
                "na fd00::5",
            ]
        );
    }

    #[test]
    fn an_answer_for_the_address_is_a_conflict_naming_ip_and_mac() {
        for squatted in ["10.0.0.5", "fd00::5"] {
            let mut seg = Segment::new(&[(squatted, OTHER)]);
            let targets = [
                target("10.0.0.5", true, Some("10.0.0.1")),
                target("fd00::5", true, None),
            ];
            let err = run(&mut seg, "eth0", &targets, &Timing::default()).unwrap_err();
            assert!(
                matches!(err, Error::Conflict { ip: found, mac: OTHER, .. } if found == ip(squatted)),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(squatted) && msg.contains("02:00:00:00:00:99"),
                "{msg}"
            );
            // Stopped at the first round; nothing asked the gateway, nothing announced.
            assert_eq!(seg.sent.len(), 2, "{:?}", seg.asked());
        }
    }

    #[test]
    fn a_silent_gateway_is_asked_tries_times_then_reported() {
        let mut seg = Segment::new(&[]);
        let timing = Timing {
            timeout: Duration::from_millis(1),
            tries: 3,
            ..Timing::default()
        };
        let err = run(
            &mut seg,
            "net1",
            &[target("10.0.0.5", false, Some("10.0.0.1"))],
            &timing,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::GatewayUnreachable { tries: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("gateway 10.0.0.1"), "{err}");
        assert_eq!(seg.asked(), ["who-has 10.0.0.1 tell 10.0.0.5"; 3]);
    }

    #[test]
    fn detection_off_for_an_address_sends_nothing_but_the_announcement() {
        let mut seg = Segment::new(&[("10.0.0.5", OTHER)]);
        run(
            &mut seg,
            "eth0",
            &[target("10.0.0.5", false, None)],
            &Timing::default(),
        )
        .unwrap();
        assert_eq!(seg.asked(), ["announce 10.0.0.5"]);
    }

    #[test]
    fn frames_parse_back_and_our_probes_claim_nothing() {
        let probe = probe_frame(POD, ip("10.0.0.5"));
        assert_eq!(probe.len(), 42);
        assert_eq!(&probe[..6], &[0xff; 6]);
        assert_eq!(Seen::parse(&probe).unwrap().claim(), None);
        assert_eq!(
            Seen::parse(&announce_frame(OTHER, ip("10.0.0.5")))
                .unwrap()
                .claim(),
            Some((ip("10.0.0.5"), OTHER))
        );
        assert_eq!(
            Seen::parse(&announce_frame(OTHER, ip("fd00::5")))
                .unwrap()
                .claim(),
            Some((ip("fd00::5"), OTHER))
        );
        // A solicitation is not an answer.
        assert_eq!(Seen::parse(&probe_frame(POD, ip("fd00::5"))), None);
    }

    #[test]
    fn solicitations_go_to_the_solicited_node_group_with_a_valid_checksum() {
        let f = probe_frame(POD, ip("2001:db8::12:3456"));
        // 33:33:ff:12:34:56, ff02::1:ff12:3456, hop limit 255, no option from `::`.
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        assert_eq!(
            Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap()),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(f[21], 255);
        assert_eq!(f.len(), 14 + 40 + 24);
        let with_option = request_frame(POD, ip("2001:db8::5"), ip("2001:db8::1"));
        assert_eq!(with_option.len(), 14 + 40 + 32);
        assert_eq!(&with_option[80..], &POD.0);
        // Summing over pseudo-header and message, checksum included, gives 0 (RFC 1071).
        for frame in [f, with_option, announce_frame(POD, ip("2001:db8::5"))] {
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
            assert_eq!(icmpv6_checksum(src, dst, &frame[54..]), 0);
        }
    }
}
