//! What a reload changes: the running configuration and the new one compared once, into a
//! [`ConfigDiff`] that every reload step reads (which upstreams keep their breaker, limiter,
//! health and metric handles, which plugins and limiters are kept, which listeners keep their
//! socket, whether the key fetcher and its cache survive, which restart-only settings wait
//! for a restart) instead of comparing configurations itself.

use std::collections::{BTreeMap, BTreeSet};

use super::{Config, ListenerConfig, ServerConfig, RESTART_ONLY};

/// How the named entries of one section (upstreams, limiters, plugins) of the new
/// configuration relate to the running one's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Only in the new configuration.
    pub added: BTreeSet<String>,
    /// Only in the running configuration.
    pub removed: BTreeSet<String>,
    /// In both, with different settings: rebuilt, state started afresh.
    pub changed: BTreeSet<String>,
    /// In both, equal: the running entry is kept as it is, state and all.
    pub unchanged: BTreeSet<String>,
}

impl Changes {
    fn between<V: PartialEq>(old: &BTreeMap<String, V>, new: &BTreeMap<String, V>) -> Self {
        let mut changes = Changes::default();
        for (name, v) in new {
            match old.get(name) {
                None => changes.added.insert(name.clone()),
                Some(o) if o == v => changes.unchanged.insert(name.clone()),
                Some(_) => changes.changed.insert(name.clone()),
            };
        }
        changes.removed = old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .cloned()
            .collect();
        changes
    }

    /// Whether the running entry `name` is kept as it is.
    pub fn keeps(&self, name: &str) -> bool {
        self.unchanged.contains(name)
    }
}

/// Which running listener each new one takes over. A new listener keeps the socket of a
/// running one with its name and address or, for a fixed port, with its address under another
/// name; the others are bound afresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerChanges {
    /// For each new listener, in order: the index of the running listener it keeps.
    pub kept: Vec<Option<usize>>,
    /// Indices of running listeners no new one keeps: they stop and drain.
    pub removed: Vec<usize>,
}

impl ListenerChanges {
    fn between(old: &[ListenerConfig], new: &[ListenerConfig]) -> Self {
        let mut taken = vec![false; old.len()];
        let mut kept: Vec<Option<usize>> = new
            .iter()
            .map(|l| {
                claim(&mut taken, old, |o| {
                    o.name == l.name && o.address == l.address
                })
            })
            .collect();
        // Port 0 asks for a new ephemeral port: only a same-named listener keeps one.
        for (w, l) in new.iter().enumerate() {
            if kept[w].is_none() && l.address.port() != 0 {
                kept[w] = claim(&mut taken, old, |o| o.address == l.address);
            }
        }
        let removed = (0..old.len()).filter(|&i| !taken[i]).collect();
        ListenerChanges { kept, removed }
    }
}

/// The first running listener not yet taken that `found` accepts, now taken.
fn claim(
    taken: &mut [bool],
    old: &[ListenerConfig],
    found: impl Fn(&ListenerConfig) -> bool,
) -> Option<usize> {
    let i = (0..old.len()).find(|&i| !taken[i] && found(&old[i]))?;
    taken[i] = true;
    Some(i)
}

/// One `[server]` setting only a restart applies, as the process runs it and as the new
/// configuration asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartOnly {
    /// The key under `[server]`, e.g. `workers`: the `setting` label of
    /// `fedgate_config_restart_required`.
    pub setting: &'static str,
    /// The value the process started with, as text.
    pub running: String,
    /// The value the new configuration asks for, as text.
    pub configured: String,
}

impl RestartOnly {
    /// The configuration asks for another value than the process runs with.
    pub fn pending(&self) -> bool {
        self.running != self.configured
    }
}

/// The values of [`RESTART_ONLY`] `server` asks for, in its order.
pub fn restart_only_values(server: &ServerConfig) -> [String; RESTART_ONLY.len()] {
    RESTART_ONLY.map(|(_, read)| read(server))
}

/// Everything a reload needs to know about what the new configuration changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    /// An unchanged upstream keeps its `Upstream` (pools, health state), breaker, retry
    /// budget and metric handles.
    pub upstreams: Changes,
    /// An unchanged limiter keeps its buckets.
    pub rate_limits: Changes,
    /// By section only: an unchanged plugin is kept if its file is unchanged too, which only
    /// reading the file tells.
    pub plugins: Changes,
    /// Which running listener, if any, each new one takes over, and which running ones stop.
    pub listeners: ListenerChanges,
    /// `[signatures.fetch]` changed: the key fetcher, its cache and breakers start afresh.
    pub fetch_changed: bool,
    /// `server.log_level` changed: the reload applies the new filter (unless `RUST_LOG`
    /// set it at start).
    pub log_level_changed: bool,
    /// Every restart-only setting, compared with the value the process started with (no
    /// reload applies them, so the running configuration's value may never have run).
    pub restart_only: Vec<RestartOnly>,
}

impl ConfigDiff {
    /// Compares the running configuration `old` with `new`; `started` is what the process
    /// started with, as [`restart_only_values`] read it.
    pub fn between(
        old: &Config,
        new: &Config,
        started: &[String; RESTART_ONLY.len()],
    ) -> ConfigDiff {
        ConfigDiff {
            upstreams: Changes::between(&old.upstreams, &new.upstreams),
            rate_limits: Changes::between(&old.rate_limits, &new.rate_limits),
            plugins: Changes::between(&old.plugins, &new.plugins),
            listeners: ListenerChanges::between(&old.listeners, &new.listeners),
            fetch_changed: old.signatures.fetch != new.signatures.fetch,
            log_level_changed: old.server.log_level != new.server.log_level,
            restart_only: RESTART_ONLY
                .iter()
                .zip(started)
                .zip(restart_only_values(&new.server))
                .map(|(((setting, _), running), configured)| RestartOnly {
                    setting,
                    running: running.clone(),
                    configured,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        super::super::from_str(text, Path::new(".")).unwrap()
    }

    const BASE: &str = r#"
[server]
workers = 2
[[listeners]]
name = "a"
address = "127.0.0.1:0"
[[listeners]]
name = "b"
address = "127.0.0.1:18080"
[upstreams.same]
endpoints = ["http://127.0.0.1:3000"]
[upstreams.edited]
endpoints = ["http://127.0.0.1:3001"]
[upstreams.dropped]
endpoints = ["http://127.0.0.1:3002"]
[rate_limits.keep]
key = "client"
rate = "10/s"
[rate_limits.tune]
key = "client"
rate = "10/s"
[[routes]]
upstream = "same"
rate_limits = ["keep", "tune"]
"#;

    fn diff(old: &str, new: &str) -> ConfigDiff {
        let old = config(old);
        ConfigDiff::between(&old, &config(new), &restart_only_values(&old.server))
    }

    #[test]
    fn sections_are_sorted_into_added_removed_changed_and_unchanged() {
        let new = BASE
            .replace("3001", "3009")
            .replace(
                "[upstreams.dropped]\nendpoints = [\"http://127.0.0.1:3002\"]",
                "[upstreams.new]\nendpoints = [\"http://127.0.0.1:3003\"]",
            )
            .replace(
                "[rate_limits.tune]\nkey = \"client\"\nrate = \"10/s\"",
                "[rate_limits.tune]\nkey = \"client\"\nrate = \"20/s\"",
            );
        let d = diff(BASE, &new);
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            d.upstreams,
            Changes {
                added: set(&["new"]),
                removed: set(&["dropped"]),
                changed: set(&["edited"]),
                unchanged: set(&["same"]),
            }
        );
        assert!(d.upstreams.keeps("same") && !d.upstreams.keeps("edited"));
        assert_eq!(d.rate_limits.unchanged, set(&["keep"]));
        assert_eq!(d.rate_limits.changed, set(&["tune"]));
        assert_eq!(d.plugins, Changes::default());
        assert!(!d.fetch_changed && !d.log_level_changed);
        assert!(d.restart_only.iter().all(|r| !r.pending()));
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let d = diff(BASE, BASE);
        assert!(d.upstreams.added.is_empty() && d.upstreams.changed.is_empty());
        assert!(d.upstreams.removed.is_empty());
        assert_eq!(d.upstreams.unchanged.len(), 3);
        assert_eq!(d.listeners.kept, vec![Some(0), Some(1)]);
        assert!(d.listeners.removed.is_empty());
    }

    #[test]
    fn listeners_keep_a_socket_by_name_and_address_or_by_fixed_address() {
        // Renamed on its fixed port: kept. Same name, new port 0 address: bound afresh.
        let new = BASE.replace("name = \"b\"", "name = \"renamed\"").replace(
            "name = \"a\"\naddress = \"127.0.0.1:0\"",
            "name = \"a\"\naddress = \"127.0.0.2:0\"",
        );
        let d = diff(BASE, &new);
        assert_eq!(d.listeners.kept, vec![None, Some(1)]);
        assert_eq!(d.listeners.removed, vec![0]);
        // A port-0 listener under another name is not the same listener.
        let new = BASE.replace("name = \"a\"", "name = \"c\"");
        let d = diff(BASE, &new);
        assert_eq!(d.listeners.kept, vec![None, Some(1)]);
        assert_eq!(d.listeners.removed, vec![0]);
        // Swapped order: each keeps its own socket.
        let swapped = BASE.replace(
            "[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\n[[listeners]]\nname = \"b\"\naddress = \"127.0.0.1:18080\"",
            "[[listeners]]\nname = \"b\"\naddress = \"127.0.0.1:18080\"\n[[listeners]]\nname = \"a\"\naddress = \"127.0.0.1:0\"",
        );
        assert_ne!(swapped, BASE);
        assert_eq!(diff(BASE, &swapped).listeners.kept, vec![Some(1), Some(0)]);
    }

    #[test]
    fn fetch_log_level_and_restart_only_settings() {
        let new = format!("{BASE}[signatures.fetch]\nenabled = true\n")
            .replace("workers = 2", "workers = 3\nlog_level = \"debug\"");
        let d = diff(BASE, &new);
        assert!(d.fetch_changed && d.log_level_changed);
        let pending: Vec<_> = d.restart_only.iter().filter(|r| r.pending()).collect();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (
                pending[0].setting,
                pending[0].running.as_str(),
                pending[0].configured.as_str()
            ),
            ("workers", "2", "3")
        );
        // Compared with what the process started with, not with the running file: going
        // back to the started value leaves nothing pending.
        let (started, running) = (config(BASE), config(&new));
        let back = ConfigDiff::between(&running, &started, &restart_only_values(&started.server));
        assert!(back.restart_only.iter().all(|r| !r.pending()));
        assert_eq!(back.restart_only.len(), RESTART_ONLY.len());
    }
}
