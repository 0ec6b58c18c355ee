//! Verification against real keys generated here: HS256 secrets, RSA and P-256 key pairs, and a
//! JWKS served by a local axum server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser as _;
use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::*;

const SECRET: &str = "test-secret-of-at-least-32-bytes!!";

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn config(extra: &[&str]) -> Config {
    let mut args = vec!["wasp-api"];
    args.extend_from_slice(extra);
    Config::try_parse_from(args).unwrap()
}

fn hs_auth(extra: &[&str]) -> Arc<Authenticator> {
    let mut args = vec!["--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    Authenticator::from_config(&config(&args))
}

fn hs_token(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn valid_claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "iat": now()})
}

fn b64(v: &Value) -> String {
    BASE64URL_NOPAD.encode(v.to_string().as_bytes())
}

/// A token with `alg: none` and no signature, the classic forgery.
pub fn alg_none_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

#[tokio::test]
async fn hs256_tokens_give_the_user_and_role() {
    let auth = hs_auth(&["--jwt-role-claim", "app_metadata.role"]);
    let id = auth
        .authenticate_header(Some(&format!(
            "Bearer {}",
            hs_token(&valid_claims("u-1"), SECRET)
        )))
        .await
        .unwrap();
    assert_eq!(
        id,
        Identity {
            user_id: "u-1".into(),
            admin: false,
            expires_at: id.expires_at,
        }
    );

    let exp = now() + 60;
    let claims = json!({"userId": 7, "exp": exp, "app_metadata": {"role": "admin"}});
    let id = auth
        .authenticate_token(&hs_token(&claims, SECRET))
        .await
        .unwrap();
    assert_eq!(id.expires_at, Some(exp));
    assert_eq!(
        id,
        Identity {
            user_id: "7".into(),
            admin: true,
            expires_at: id.expires_at,
        }
    );
}

#[tokio::test]
async fn supabase_secret_is_used_when_jwt_secret_is_unset() {
    let auth = Authenticator::from_config(&config(&["--supabase-jwt-secret", SECRET]));
    let token = hs_token(&valid_claims("u"), SECRET);
    assert_eq!(auth.authenticate_token(&token).await.unwrap().user_id, "u");
}

const SUPABASE: &str = "supabase-secret-of-at-least-32-bytes";

#[tokio::test]
async fn with_both_secrets_a_token_signed_with_either_is_accepted() {
    let both = hs_auth(&["--supabase-jwt-secret", SUPABASE]);
    for (secret, user) in [(SECRET, "main-app-user"), (SUPABASE, "supabase-user")] {
        let token = hs_token(&valid_claims(user), secret);
        assert_eq!(both.authenticate_token(&token).await.unwrap().user_id, user);
    }
    // A third secret is still a bad signature, and an expired token signed with the second
    // secret says "expired", not "signature".
    let other = hs_token(&valid_claims("u"), "neither-secret-neither-secret-!!");
    assert_eq!(
        both.authenticate_token(&other).await,
        Err(AuthError::Signature)
    );
    let expired = hs_token(&json!({"sub": "u", "exp": now() - 3600}), SUPABASE);
    assert_eq!(
        both.authenticate_token(&expired).await,
        Err(AuthError::Expired)
    );
    // Only the Supabase secret: tokens of the main app's secret are refused.
    let supabase_only = Authenticator::from_config(&config(&["--supabase-jwt-secret", SUPABASE]));
    assert_eq!(
        supabase_only
            .authenticate_token(&hs_token(&valid_claims("u"), SECRET))
            .await,
        Err(AuthError::Signature)
    );
}

/// Seed 003's README example payload: no `exp`.
fn seed_003_example() -> Value {
    json!({"sub": "user-123", "email": "doctor@clinic.com", "iat": 1234567890})
}

#[tokio::test]
async fn tokens_without_exp_are_refused_unless_jwt_require_exp_is_false() {
    let token = hs_token(&seed_003_example(), SECRET);
    assert_eq!(
        hs_auth(&[]).authenticate_token(&token).await,
        Err(AuthError::NoExpiry)
    );
    let lenient = hs_auth(&["--jwt-require-exp", "false"]);
    assert_eq!(
        lenient.authenticate_token(&token).await,
        Ok(Identity {
            user_id: "user-123".into(),
            admin: false,
            expires_at: None,
        })
    );
    // Lenient about a missing `exp`, never about a present one, nor about the signature.
    let expired = hs_token(&json!({"sub": "u", "exp": now() - 3600}), SECRET);
    assert_eq!(
        lenient.authenticate_token(&expired).await,
        Err(AuthError::Expired)
    );
    let forged = hs_token(&seed_003_example(), "wrong-secret-wrong-secret-wrong!!");
    assert_eq!(
        lenient.authenticate_token(&forged).await,
        Err(AuthError::Signature)
    );
    assert_eq!(
        lenient
            .authenticate_token(&alg_none_token(&seed_003_example()))
            .await,
        Err(AuthError::Algorithm)
    );
    // The Supabase secret of a two-secret setup, too.
    let both = hs_auth(&["--supabase-jwt-secret", SUPABASE, "--jwt-require-exp=false"]);
    let via_supabase = hs_token(&seed_003_example(), SUPABASE);
    assert_eq!(
        both.authenticate_token(&via_supabase)
            .await
            .unwrap()
            .user_id,
        "user-123"
    );
}

#[tokio::test]
async fn bad_hs256_tokens_are_refused_with_a_reason() {
    let auth = hs_auth(&["--jwt-leeway-seconds", "0"]);
    let cases = [
        (
            hs_token(&json!({"sub": "u", "exp": now() - 10}), SECRET),
            AuthError::Expired,
        ),
        (hs_token(&json!({"sub": "u"}), SECRET), AuthError::NoExpiry),
        (
            hs_token(&valid_claims("u"), "another-secret-another-secret!!"),
            AuthError::Signature,
        ),
        (
            hs_token(&json!({"exp": now() + 60}), SECRET),
            AuthError::NoUserId,
        ),
        (
            hs_token(
                &json!({"sub": "u", "exp": now() + 60, "nbf": now() + 300}),
                SECRET,
            ),
            AuthError::NotYetValid,
        ),
        (alg_none_token(&valid_claims("u")), AuthError::Algorithm),
        (
            alg_none_token(&json!({"sub": "u", "exp": now() + 60, "alg": "HS256"})),
            AuthError::Algorithm,
        ),
        ("not-a-jwt".to_owned(), AuthError::Malformed),
        ("a.b.c".to_owned(), AuthError::Malformed),
    ];
    for (token, expected) in cases {
        assert_eq!(
            auth.authenticate_token(&token).await,
            Err(expected),
            "{token}"
        );
    }
    assert_eq!(
        auth.authenticate_header(None).await,
        Err(AuthError::Missing)
    );
    assert_eq!(
        auth.authenticate_header(Some("Bearer ")).await,
        Err(AuthError::Missing)
    );
    assert_eq!(
        auth.authenticate_header(Some("Basic dTpw")).await,
        Err(AuthError::Missing)
    );
}

#[tokio::test]
async fn hs384_and_unconfigured_algorithms_are_refused() {
    let auth = hs_auth(&[]);
    let token = encode(
        &Header::new(Algorithm::HS384),
        &valid_claims("u"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        auth.authenticate_token(&token).await,
        Err(AuthError::Algorithm)
    );
    // No secret and no JWKS: nothing is accepted.
    let none = Authenticator::from_config(&config(&[]));
    let token = hs_token(&valid_claims("u"), SECRET);
    assert_eq!(
        none.authenticate_token(&token).await,
        Err(AuthError::Algorithm)
    );
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let auth = hs_auth(&["--jwt-issuer", "https://idp", "--jwt-audience", "crm,erp"]);
    let ok = json!({"sub": "u", "exp": now() + 60, "iss": "https://idp", "aud": "erp"});
    assert!(
        auth.authenticate_token(&hs_token(&ok, SECRET))
            .await
            .is_ok()
    );
    for bad in [
        json!({"sub": "u", "exp": now() + 60, "iss": "https://evil", "aud": "crm"}),
        json!({"sub": "u", "exp": now() + 60, "iss": "https://idp", "aud": "other"}),
        json!({"sub": "u", "exp": now() + 60, "aud": "crm"}),
        json!({"sub": "u", "exp": now() + 60, "iss": "https://idp"}),
    ] {
        assert_eq!(
            auth.authenticate_token(&hs_token(&bad, SECRET)).await,
            Err(AuthError::IssuerOrAudience),
            "{bad}"
        );
    }
    // Without configuration, an `aud` claim is not a reason to refuse.
    let plain = hs_auth(&[]);
    let with_aud = json!({"sub": "u", "exp": now() + 60, "aud": "anything"});
    assert!(
        plain
            .authenticate_token(&hs_token(&with_aud, SECRET))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn insecure_seed_identities_only_with_the_dev_flag() {
    let secure = hs_auth(&[]);
    assert!(!secure.dev_insecure());
    assert_eq!(
        secure.authenticate_header(Some("UserId alice")).await,
        Err(AuthError::Missing)
    );
    assert_eq!(
        secure.authenticate_header(Some("Bearer alice")).await,
        Err(AuthError::Malformed)
    );

    let dev = hs_auth(&["--dev-insecure-auth"]);
    assert!(dev.dev_insecure());
    let id = dev.authenticate_header(Some("UserId alice")).await.unwrap();
    assert_eq!(
        id,
        Identity {
            user_id: "alice".into(),
            admin: false,
            expires_at: None,
        }
    );
    assert_eq!(
        dev.authenticate_header(Some("Bearer bob"))
            .await
            .unwrap()
            .user_id,
        "bob"
    );
    // A JWT is still verified: a bad one does not fall back to "raw token as user id".
    let forged = hs_token(&valid_claims("carol"), "wrong-secret-wrong-secret-wrong!!");
    assert_eq!(
        dev.authenticate_token(&forged).await,
        Err(AuthError::Signature)
    );
    assert_eq!(
        dev.authenticate_token(&alg_none_token(&valid_claims("c")))
            .await,
        Err(AuthError::Algorithm)
    );
}

// ---- JWKS ----

struct RsaPair {
    encoding: EncodingKey,
    jwk: Value,
    public_pem: String,
}

/// RSA key generation is slow in debug builds: three keys, made once, in parallel, shared.
static RSA_KEYS: std::sync::LazyLock<Vec<rsa::RsaPrivateKey>> = std::sync::LazyLock::new(|| {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
});

/// RSA key number `n` (0..3) published under `kid`.
fn rsa_pair(n: usize, kid: &str) -> RsaPair {
    use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
    use rsa::traits::PublicKeyParts;
    let key = &RSA_KEYS[n];
    let pem = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let public = key.to_public_key();
    RsaPair {
        encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        jwk: json!({
            "kty": "RSA", "kid": kid, "use": "sig",
            "n": BASE64URL_NOPAD.encode(&public.n().to_bytes_be()),
            "e": BASE64URL_NOPAD.encode(&public.e().to_bytes_be()),
        }),
        public_pem: public.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap(),
    }
}

fn ec_pair(kid: &str) -> (EncodingKey, Value) {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::EncodePrivateKey;
    let key = p256::SecretKey::random(&mut rand_core::OsRng);
    let pem = key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
    let point = key.public_key().to_encoded_point(false);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": kid,
        "x": BASE64URL_NOPAD.encode(point.x().unwrap()),
        "y": BASE64URL_NOPAD.encode(point.y().unwrap()),
    });
    (EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(), jwk)
}

fn signed(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

/// A JWKS endpoint on 127.0.0.1:0 whose key set the test can change; counts fetches.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

async fn jwks_server(keys: Value) -> JwksServer {
    let keys = Arc::new(Mutex::new(json!({ "keys": keys })));
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get({
            let (keys, hits) = (keys.clone(), hits.clone());
            move || async move {
                hits.fetch_add(1, Ordering::SeqCst);
                axum::Json(keys.lock().await.clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    JwksServer {
        url: format!("http://{addr}/jwks.json"),
        keys,
        hits,
    }
}

fn jwks_auth(url: &str, extra: &[&str]) -> Arc<Authenticator> {
    let mut args = vec!["--jwks-url", url];
    args.extend_from_slice(extra);
    Authenticator::from_config(&config(&args))
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_the_jwks() {
    let rsa = rsa_pair(0, "rsa-1");
    let (ec, ec_jwk) = ec_pair("ec-1");
    let server = jwks_server(json!([rsa.jwk, ec_jwk])).await;
    let auth = jwks_auth(&server.url, &[]);
    let claims = json!({"sub": "u-rs", "exp": now() + 60, "role": "admin"});
    let id = auth
        .authenticate_token(&signed(
            Algorithm::RS256,
            Some("rsa-1"),
            &claims,
            &rsa.encoding,
        ))
        .await
        .unwrap();
    assert_eq!(
        id,
        Identity {
            user_id: "u-rs".into(),
            admin: true,
            expires_at: id.expires_at,
        }
    );
    let id = auth
        .authenticate_token(&signed(
            Algorithm::ES256,
            Some("ec-1"),
            &valid_claims("u-ec"),
            &ec,
        ))
        .await
        .unwrap();
    assert_eq!(id.user_id, "u-ec");
    // One fetch served both.
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // A key used with another algorithm than its own, or a kid of the wrong type.
    let wrong = signed(Algorithm::ES256, Some("rsa-1"), &valid_claims("u"), &ec);
    assert_eq!(
        auth.authenticate_token(&wrong).await,
        Err(AuthError::UnknownKey)
    );
    // Expired and wrong-key RS256 tokens.
    let expired = json!({"sub": "u", "exp": now() - 3600});
    assert_eq!(
        auth.authenticate_token(&signed(
            Algorithm::RS256,
            Some("rsa-1"),
            &expired,
            &rsa.encoding
        ))
        .await,
        Err(AuthError::Expired)
    );
    let other = rsa_pair(1, "rsa-1");
    assert_eq!(
        auth.authenticate_token(&signed(
            Algorithm::RS256,
            Some("rsa-1"),
            &valid_claims("u"),
            &other.encoding
        ))
        .await,
        Err(AuthError::Signature)
    );
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let rsa = rsa_pair(0, "rsa-1");
    let oct = json!({"kty": "oct", "kid": "oct-1", "k": BASE64URL_NOPAD.encode(SECRET.as_bytes())});
    let server = jwks_server(json!([rsa.jwk, oct])).await;
    // HS256 signed with the RSA public key as the HMAC secret (the classic confusion).
    let confused = encode(
        &{
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("rsa-1".into());
            h
        },
        &valid_claims("mallory"),
        &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
    )
    .unwrap();
    let jwks_only = jwks_auth(&server.url, &[]);
    assert_eq!(
        jwks_only.authenticate_token(&confused).await,
        Err(AuthError::Algorithm)
    );
    // With an HS secret as well, the RSA key is never used as an HMAC secret.
    let both = jwks_auth(
        &server.url,
        &["--jwt-secret", "a-different-secret-a-different-secret"],
    );
    assert_eq!(
        both.authenticate_token(&confused).await,
        Err(AuthError::Signature)
    );
    // A symmetric key published in the JWKS is ignored.
    let via_oct = signed(
        Algorithm::HS256,
        Some("oct-1"),
        &valid_claims("m"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    assert_eq!(
        jwks_only.authenticate_token(&via_oct).await,
        Err(AuthError::Algorithm)
    );
    assert!(
        jwks_only
            .authenticate_token(&alg_none_token(&valid_claims("m")))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn key_rotation_is_picked_up_on_an_unknown_kid_at_a_limited_rate() {
    let old = rsa_pair(1, "k-old");
    let server = jwks_server(json!([old.jwk])).await;
    let auth = jwks_auth(&server.url, &["--jwks-min-refresh-seconds", "1"]);
    let t_old = signed(
        Algorithm::RS256,
        Some("k-old"),
        &valid_claims("u"),
        &old.encoding,
    );
    assert!(auth.authenticate_token(&t_old).await.is_ok());
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // Forged kids: at most one fetch per refresh interval (1 s here), however many arrive.
    let forged: Vec<String> = (0..20)
        .map(|i| {
            signed(
                Algorithm::RS256,
                Some(&format!("forged-{i}")),
                &valid_claims("u"),
                &old.encoding,
            )
        })
        .collect();
    let start = std::time::Instant::now();
    for t in &forged {
        assert_eq!(auth.authenticate_token(t).await, Err(AuthError::UnknownKey));
    }
    let allowed = 2 + start.elapsed().as_secs() as usize;
    let hits = server.hits.load(Ordering::SeqCst);
    assert!(hits <= allowed, "{hits} fetches, {allowed} allowed");

    // The provider rotates: a new key appears, the old one goes.
    let new = rsa_pair(2, "k-new");
    *server.keys.lock().await = json!({"keys": [new.jwk]});
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let t_new = signed(
        Algorithm::RS256,
        Some("k-new"),
        &valid_claims("u2"),
        &new.encoding,
    );
    assert_eq!(auth.authenticate_token(&t_new).await.unwrap().user_id, "u2");
    // The old kid is gone from the cache after the refresh.
    assert_eq!(
        auth.authenticate_token(&t_old).await,
        Err(AuthError::UnknownKey)
    );
}

#[tokio::test]
async fn an_unreachable_jwks_refuses_tokens_without_panicking() {
    let (ec, _) = ec_pair("e");
    let auth = jwks_auth("http://127.0.0.1:9/jwks.json", &[]);
    let t = signed(Algorithm::ES256, Some("e"), &valid_claims("u"), &ec);
    assert_eq!(
        auth.authenticate_token(&t).await,
        Err(AuthError::UnknownKey)
    );
}

/// A provider serving one EC key, the authenticator caching it for a second and refreshing at
/// will, and a token that key signed (already accepted once).
async fn one_key_with_a_one_second_cache() -> (Arc<Authenticator>, JwksServer, String) {
    let (ec, jwk) = ec_pair("e1");
    let server = jwks_server(json!([jwk])).await;
    let auth = jwks_auth(
        &server.url,
        &[
            "--jwks-max-age-seconds",
            "1",
            "--jwks-min-refresh-seconds",
            "0",
        ],
    );
    let t = signed(Algorithm::ES256, Some("e1"), &valid_claims("u"), &ec);
    assert!(auth.authenticate_token(&t).await.is_ok());
    (auth, server, t)
}

#[tokio::test]
async fn a_key_dropped_by_the_provider_stops_working_when_the_set_is_refreshed() {
    let (auth, server, t) = one_key_with_a_one_second_cache().await;
    *server.keys.lock().await = json!({"keys": []});
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        auth.authenticate_token(&t).await,
        Err(AuthError::UnknownKey)
    );
}

#[tokio::test]
async fn cached_keys_survive_an_unreachable_provider() {
    let (auth, server, t) = one_key_with_a_one_second_cache().await;
    // The provider answers garbage now; the cached key keeps working.
    *server.keys.lock().await = json!("not a jwks");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(auth.authenticate_token(&t).await.is_ok());
    assert!(server.hits.load(Ordering::SeqCst) >= 2);
}
