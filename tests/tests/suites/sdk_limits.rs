//! The SDK's native test backend imitates the gateway's rules for plugins (label sizes, the
//! series cap, default buckets, the store's bounds, registered fields, the shortest tick),
//! so that a plugin's own tests catch what the gateway would refuse or cap. Its copies are
//! checked here against the gateway's, so that the two cannot drift apart.

use fedgate::plugin_limits as plugin;
use fedgate_sdk::testing::limits;

#[test]
fn the_sdk_imitates_the_gateways_plugin_limits() {
    assert_eq!(limits::MAX_LABEL_VALUE_BYTES, plugin::MAX_LABEL_VALUE);
    assert_eq!(limits::DEFAULT_MAX_SERIES, plugin::DEFAULT_PLUGIN_SERIES);
    assert_eq!(&limits::DEFAULT_BUCKETS[..], prometheus::DEFAULT_BUCKETS);
    let store = plugin::StoreLimits::default();
    assert_eq!(limits::MAX_STORE_KEY_BYTES, store.max_key_bytes);
    assert_eq!(limits::DEFAULT_STORE_ENTRIES, store.max_entries);
    assert_eq!(limits::DEFAULT_STORE_VALUE_BYTES, store.max_value_bytes);
    assert_eq!(
        fedgate_sdk::MAX_REQUEST_HEADERS,
        plugin::MAX_REQUEST_HEADERS
    );
    assert_eq!(fedgate_sdk::MIN_TICK_INTERVAL, plugin::MIN_TICK);
}
