//! Phase 6, fetched keys: reading the public key a key id names out of the document served
//! at the key id URL ([`super::fetch`] fetches it).
//!
//! Three shapes are found in the wild: an actor whose `publicKey` (an object, or an array of
//! them) holds the key (Mastodon, Misskey, Akkoma), a key document itself whose `id` is the key
//! id (GoToSocial's `/main-key`), and FEP-521a `assertionMethod` Multikeys carrying an Ed25519
//! `publicKeyMultibase`. The key's owner (`owner`, `controller`, or the actor holding it) must
//! be on the key id's host: a server may only speak for its own actors.

use serde_json::{Map, Value};

use super::key::PublicKey;

/// The key `key_id` names in `document`, or why there is none.
pub fn key_from_document(document: &[u8], key_id: &str) -> Result<PublicKey, String> {
    let doc: Value = serde_json::from_slice(document)
        .map_err(|e| format!("the key document is not JSON: {e}"))?;
    let doc = doc
        .as_object()
        .ok_or("the key document is not a JSON object")?;
    let (entry, actor) =
        find(doc, key_id).ok_or_else(|| format!("no key {key_id} in the document"))?;
    let owner = ["owner", "controller"]
        .iter()
        .find_map(|f| entry.get(*f).and_then(id_of))
        .or(actor)
        .ok_or("the key names no owner")?;
    let want = host_of(key_id).ok_or("the key id has no host")?;
    if host_of(owner).as_deref() != Some(want.as_str()) {
        return Err(format!("the key's owner {owner} is not on {want}"));
    }
    if let Some(pem) = entry.get("publicKeyPem").and_then(Value::as_str) {
        return PublicKey::from_pem(pem).map_err(|e| format!("publicKeyPem: {e}"));
    }
    if let Some(mb) = entry.get("publicKeyMultibase").and_then(Value::as_str) {
        return PublicKey::from_multibase(mb).map_err(|e| format!("publicKeyMultibase: {e}"));
    }
    Err("the key has neither publicKeyPem nor publicKeyMultibase".into())
}

/// The object describing `key_id` and, when it sits inside an actor, that actor's id.
fn find<'a>(
    doc: &'a Map<String, Value>,
    key_id: &str,
) -> Option<(&'a Map<String, Value>, Option<&'a str>)> {
    let is_key = |o: &Map<String, Value>| {
        o.get("id").and_then(Value::as_str) == Some(key_id)
            && (o.contains_key("publicKeyPem") || o.contains_key("publicKeyMultibase"))
    };
    if is_key(doc) {
        return Some((doc, None));
    }
    let actor = doc.get("id").and_then(Value::as_str);
    ["publicKey", "assertionMethod"]
        .iter()
        .filter_map(|f| doc.get(*f))
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .filter_map(Value::as_object)
        .find(|o| is_key(o))
        .map(|o| (o, actor))
}

/// An id given as a string or as an object with an `id`.
fn id_of(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("id").and_then(Value::as_str),
        _ => None,
    }
}

/// The lowercased host of an `http(s)` URL.
pub fn host_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.split('#').next()?.parse().ok()?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return None,
    }
    Some(uri.host()?.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::super::key::tests::{ed_pair, ED_PUB, RSA_PUB};
    use super::*;
    use ring::signature::KeyPair;
    use serde_json::json;

    const KEY_ID: &str = "https://remote.example/users/bob#main-key";
    const ACTOR: &str = "https://remote.example/users/bob";

    fn parse(doc: &Value, key_id: &str) -> Result<PublicKey, String> {
        key_from_document(doc.to_string().as_bytes(), key_id)
    }

    #[test]
    fn a_mastodon_actor_with_one_public_key() {
        let doc = json!({
            "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
            "id": ACTOR,
            "type": "Person",
            "inbox": "https://remote.example/users/bob/inbox",
            "publicKey": {"id": KEY_ID, "owner": ACTOR, "publicKeyPem": RSA_PUB},
        });
        assert_eq!(
            parse(&doc, KEY_ID).unwrap(),
            PublicKey::from_pem(RSA_PUB).unwrap()
        );
    }

    #[test]
    fn a_public_key_array_picks_the_entry_with_the_key_id() {
        let ed_id = "https://remote.example/users/bob#ed25519-key";
        let doc = json!({
            "id": ACTOR,
            "type": "Person",
            "publicKey": [
                {"id": KEY_ID, "owner": ACTOR, "publicKeyPem": RSA_PUB},
                {"id": ed_id, "owner": ACTOR, "publicKeyPem": ED_PUB},
            ],
        });
        assert_eq!(
            parse(&doc.clone(), ed_id).unwrap(),
            PublicKey::from_pem(ED_PUB).unwrap()
        );
        assert_eq!(
            parse(&doc.clone(), KEY_ID).unwrap(),
            PublicKey::from_pem(RSA_PUB).unwrap()
        );
        let missing = parse(&doc, "https://remote.example/users/bob#other").unwrap_err();
        assert!(missing.contains("no key"), "{missing}");
    }

    #[test]
    fn a_gotosocial_key_document() {
        let key_id = "https://gts.example/users/bob/main-key";
        let doc = json!({
            "@context": "https://w3id.org/security/v1",
            "id": key_id,
            "owner": "https://gts.example/users/bob",
            "publicKeyPem": RSA_PUB,
        });
        assert_eq!(
            parse(&doc, key_id).unwrap(),
            PublicKey::from_pem(RSA_PUB).unwrap()
        );
    }

    #[test]
    fn a_multikey_assertion_method() {
        let ed = ed_pair();
        let mut multicodec = vec![0xed, 0x01];
        multicodec.extend_from_slice(ed.public_key().as_ref());
        let multibase = format!("z{}", bs58::encode(multicodec).into_string());
        let key_id = "https://remote.example/users/bob#ed25519-key";
        let doc = json!({
            "id": ACTOR,
            "type": "Person",
            "publicKey": {"id": KEY_ID, "owner": ACTOR, "publicKeyPem": RSA_PUB},
            "assertionMethod": [{
                "id": key_id,
                "type": "Multikey",
                "controller": ACTOR,
                "publicKeyMultibase": multibase,
            }],
        });
        assert_eq!(
            parse(&doc, key_id).unwrap(),
            PublicKey::from_pem(ED_PUB).unwrap()
        );
    }

    #[test]
    fn an_owner_on_another_host_is_refused() {
        let doc = json!({
            "id": ACTOR,
            "publicKey": {"id": KEY_ID, "owner": "https://evil.example/users/bob", "publicKeyPem": RSA_PUB},
        });
        let e = parse(&doc, KEY_ID).unwrap_err();
        assert!(e.contains("not on remote.example"), "{e}");
        // Without an owner of its own, the key belongs to the actor that holds it.
        let doc = json!({
            "id": "https://evil.example/users/bob",
            "publicKey": {"id": KEY_ID, "publicKeyPem": RSA_PUB},
        });
        assert!(parse(&doc, KEY_ID).is_err());
        let doc = json!({"id": KEY_ID, "publicKeyPem": RSA_PUB});
        assert_eq!(parse(&doc, KEY_ID).unwrap_err(), "the key names no owner");
    }

    #[test]
    fn bad_documents_say_why() {
        assert!(key_from_document(b"<html>", KEY_ID)
            .unwrap_err()
            .contains("not JSON"));
        assert!(key_from_document(b"[1]", KEY_ID)
            .unwrap_err()
            .contains("not a JSON object"));
        let doc = json!({
            "id": ACTOR,
            "publicKey": {"id": KEY_ID, "owner": ACTOR, "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
        });
        assert!(parse(&doc, KEY_ID).unwrap_err().starts_with("publicKeyPem"));
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(host_of(KEY_ID).as_deref(), Some("remote.example"));
        assert_eq!(
            host_of("HTTP://Remote.Example:8080/a").as_deref(),
            Some("remote.example")
        );
        assert_eq!(host_of("acct:bob@remote.example"), None);
        assert_eq!(host_of("key-1"), None);
    }
}
