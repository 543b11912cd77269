//! Building each cloud's object store the way its own tools configure it: the usual
//! environment of each (`AWS_*`, `GOOGLE_*`, `AZURE_*`), for S3 also the AWS shared
//! files (`~/.aws/credentials`, `~/.aws/config`, `AWS_PROFILE`), and ferry's flags on top.

use super::spec::{Cloud, CloudSpec};
use crate::sink::api::UrlStyle;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the environment is read from: the process's, or a map in tests.
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, empty values treated as unset (as the AWS CLI does).
pub(super) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A store, and what to tell the user when its requests are refused for want of access.
pub(super) struct Built {
    pub store: Arc<dyn ObjectStore>,
    pub access_hint: String,
}

/// Builds the store for `spec`; the error is the cause in words.
pub(super) fn build(
    spec: &CloudSpec,
    retry: Option<RetryConfig>,
    env: Env,
) -> Result<Built, String> {
    match spec.cloud {
        Cloud::S3 => s3(spec, retry, env),
        Cloud::Gcs => gcs(spec, retry, env),
        Cloud::Azure => azure(spec, retry, env),
    }
}

/// Client options shared by the clouds: plain http allowed for an `http://` endpoint
/// (local emulators, MinIO), never otherwise.
fn client_options(endpoint: Option<&str>) -> ClientOptions {
    ClientOptions::new().with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")))
}

#[cfg(feature = "s3")]
fn s3(spec: &CloudSpec, retry: Option<RetryConfig>, env: Env) -> Result<Built, String> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as K};
    let profile = AwsProfile::load(spec.profile.as_deref(), env)?;
    // Every AWS_* variable object_store knows, as `from_env` would take them, but read
    // through `env` so that precedence is testable.
    let mut b = AmazonS3Builder::new();
    for (name, value) in vars_with_prefix("AWS_", env) {
        if let Ok(key) = name.to_ascii_lowercase().parse::<K>() {
            b = b.with_config(key, value);
        }
    }
    // A SHA-256 of every PUT and part, which S3 checks against the body it received
    // (and keeps with the object); object_store signs the payload with the same digest.
    b = b.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
    let has_env_keys = env("AWS_ACCESS_KEY_ID").is_some();
    if !has_env_keys {
        if let Some(p) = &profile {
            if let (Some(id), Some(secret)) = (&p.access_key_id, &p.secret_access_key) {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(token) = &p.session_token {
                    b = b.with_token(token);
                }
            }
        }
    }
    let region = env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| profile.as_ref().and_then(|p| p.region.clone()))
        .unwrap_or_else(|| "us-east-1".into());
    let endpoint = spec
        .endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| profile.as_ref().and_then(|p| p.endpoint_url.clone()));
    b = b.with_bucket_name(&spec.bucket).with_region(&region);
    // A custom endpoint (MinIO, moto, Ceph, R2 …) is addressed path-style unless asked
    // otherwise; AWS itself virtual-hosted, as the AWS CLI does.
    let style = spec.url_style.unwrap_or(if endpoint.is_some() {
        UrlStyle::Path
    } else {
        UrlStyle::Virtual
    });
    if let Some(e) = &endpoint {
        let e = match style {
            UrlStyle::Path => e.clone(),
            UrlStyle::Virtual => with_bucket_host(e, &spec.bucket)?,
        };
        b = b.with_endpoint(e);
    }
    b = b.with_virtual_hosted_style_request(style == UrlStyle::Virtual);
    b = b.with_client_options(client_options(endpoint.as_deref()));
    if let Some(r) = retry {
        b = b.with_retry(r);
    }
    let profile_keys = profile.as_ref().is_some_and(|p| p.access_key_id.is_some());
    let elsewhere = [
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ]
    .iter()
    .any(|v| env(v).is_some());
    // Without keys object_store asks the EC2 instance metadata service; the AWS CLI's
    // switch to say "not on EC2" makes that a clear error at once instead.
    let imds_off = env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !has_env_keys && !profile_keys && !elsewhere && imds_off && !spec_skips_signature(env) {
        return Err(format!("no S3 credentials found. {}", AWS_CREDENTIALS));
    }
    let store = b.build().map_err(|e| e.to_string())?;
    let source = match (has_env_keys, &profile) {
        (true, _) => "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY".to_string(),
        (false, Some(p)) if p.access_key_id.is_some() => format!("profile '{}'", p.name),
        _ => "no keys found".to_string(),
    };
    Ok(Built {
        store: Arc::new(store),
        access_hint: format!("credentials used: {source}. {AWS_CREDENTIALS}"),
    })
}

#[cfg(not(feature = "s3"))]
fn s3(_: &CloudSpec, _: Option<RetryConfig>, _: Env) -> Result<Built, String> {
    Err("this build has no S3 support (cargo feature 's3')".into())
}

/// The variables named `PREFIX…`, as `from_env` of each builder would take them, but
/// with values read through `env` (names from the process: the only place to list them).
fn vars_with_prefix(prefix: &str, env: Env) -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with(prefix))
        .filter_map(|k| env(&k).map(|v| (k, v)))
        .collect()
}

/// Every way to give S3 credentials, in the order they are looked for.
const AWS_CREDENTIALS: &str = "S3 credentials come from, first to last: \
    AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); \
    --profile or AWS_PROFILE in ~/.aws/credentials or ~/.aws/config \
    (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE); \
    AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN; the ECS task role; the EC2 instance role";

/// `AWS_SKIP_SIGNATURE=true`: anonymous requests, for public buckets; no keys needed.
fn spec_skips_signature(env: Env) -> bool {
    env("AWS_SKIP_SIGNATURE").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `https://host:port/path` → `https://bucket.host:port/path`, for virtual-hosted
/// addressing through a custom endpoint.
fn with_bucket_host(endpoint: &str, bucket: &str) -> Result<String, String> {
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| format!("endpoint '{endpoint}' is not a URL (https://host[:port])"))?;
    Ok(format!("{scheme}://{bucket}.{rest}"))
}

/// The parts of an AWS named profile ferry uses.
#[derive(Debug, Default, PartialEq)]
pub(super) struct AwsProfile {
    pub name: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

impl AwsProfile {
    /// Reads profile `flag` (else `AWS_PROFILE`, else `default`) from the shared
    /// credentials and config files, as the AWS CLI does: keys from the credentials file
    /// win over the config file's. `None` when the default profile is absent; an error
    /// when a named one is, or when it needs what ferry does not do (assuming a role).
    pub(super) fn load(flag: Option<&str>, env: Env) -> Result<Option<AwsProfile>, String> {
        let named = flag.map(str::to_string).or_else(|| env("AWS_PROFILE"));
        let name = named.clone().unwrap_or_else(|| "default".into());
        let home = env("HOME").map(PathBuf::from);
        let file = |var: &str, default: &str| {
            env(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
        };
        let credentials_path = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
        let config_path = file("AWS_CONFIG_FILE", "config");
        let credentials = read_section(credentials_path.as_ref(), &name)?;
        let config_section = if name == "default" {
            "default".to_string()
        } else {
            format!("profile {name}")
        };
        let config = read_section(config_path.as_ref(), &config_section)?;
        if credentials.is_none() && config.is_none() {
            return match named {
                None => Ok(None),
                Some(n) => Err(format!(
                    "AWS profile '{n}' is not in {} or {}",
                    shown(credentials_path.as_ref()),
                    shown(config_path.as_ref())
                )),
            };
        }
        let (credentials, config) = (credentials.unwrap_or_default(), config.unwrap_or_default());
        let get = |key: &str| credentials.get(key).or_else(|| config.get(key)).cloned();
        let access_key_id = get("aws_access_key_id");
        if access_key_id.is_none()
            && (get("role_arn").is_some()
                || get("sso_session").is_some()
                || get("sso_start_url").is_some()
                || get("credential_process").is_some())
        {
            return Err(format!(
                "AWS profile '{name}' gets its keys by assuming a role, SSO or a credential process, which ferry does not do itself; \
                 export them first: eval \"$(aws configure export-credentials --profile {name} --format env)\""
            ));
        }
        Ok(Some(AwsProfile {
            name,
            access_key_id,
            secret_access_key: get("aws_secret_access_key"),
            session_token: get("aws_session_token"),
            region: get("region"),
            endpoint_url: get("endpoint_url"),
        }))
    }
}

fn shown(p: Option<&PathBuf>) -> String {
    p.map_or_else(|| "~/.aws/…".into(), |p| p.display().to_string())
}

/// One section of an INI file, keys lower-cased; `None` if the file or section is absent.
fn read_section(
    path: Option<&PathBuf>,
    section: &str,
) -> Result<Option<HashMap<String, String>>, String> {
    let Some(path) = path else { return Ok(None) };
    let ini = match ini::Ini::load_from_file(path) {
        Ok(ini) => ini,
        Err(ini::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Ok(ini.section(Some(section)).map(|s| {
        s.iter()
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    }))
}

#[cfg(feature = "gcs")]
fn gcs(spec: &CloudSpec, retry: Option<RetryConfig>, env: Env) -> Result<Built, String> {
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey as K};
    let mut b = GoogleCloudStorageBuilder::new();
    for (name, value) in vars_with_prefix("GOOGLE_", env) {
        if let Ok(key) = name.to_ascii_lowercase().parse::<K>() {
            b = b.with_config(key, value);
        }
    }
    if let Some(adc) = env("GOOGLE_APPLICATION_CREDENTIALS") {
        b = b.with_application_credentials(adc);
    }
    let endpoint = spec.endpoint.clone().or_else(|| env("GOOGLE_BASE_URL"));
    if let Some(e) = &endpoint {
        b = b.with_base_url(e);
    }
    b = b
        .with_bucket_name(&spec.bucket)
        .with_client_options(client_options(endpoint.as_deref()));
    if let Some(r) = retry {
        b = b.with_retry(r);
    }
    let store = b.build().map_err(|e| e.to_string())?;
    Ok(Built {
        store: Arc::new(store),
        access_hint: "GCS credentials come from GOOGLE_SERVICE_ACCOUNT (a key file path) or \
                      GOOGLE_SERVICE_ACCOUNT_KEY (its JSON), GOOGLE_APPLICATION_CREDENTIALS, \
                      `gcloud auth application-default login`, or the instance's service account"
            .into(),
    })
}

#[cfg(not(feature = "gcs"))]
fn gcs(_: &CloudSpec, _: Option<RetryConfig>, _: Env) -> Result<Built, String> {
    Err("this build has no Google Cloud Storage support (cargo feature 'gcs')".into())
}

#[cfg(feature = "azure")]
fn azure(spec: &CloudSpec, retry: Option<RetryConfig>, env: Env) -> Result<Built, String> {
    use object_store::azure::{AzureConfigKey as K, MicrosoftAzureBuilder};
    let mut b = MicrosoftAzureBuilder::new();
    for (name, value) in vars_with_prefix("AZURE_", env) {
        if let Ok(key) = name.to_ascii_lowercase().parse::<K>() {
            b = b.with_config(key, value);
        }
    }
    let endpoint = spec
        .endpoint
        .clone()
        .or_else(|| env("AZURE_STORAGE_ENDPOINT"));
    if let Some(e) = &endpoint {
        b = b.with_endpoint(e.clone());
    }
    let emulator = env("AZURE_STORAGE_USE_EMULATOR").is_some_and(|v| v == "true" || v == "1");
    b = b
        .with_container_name(&spec.bucket)
        .with_client_options(client_options(
            endpoint
                .as_deref()
                .or(emulator.then_some("http://127.0.0.1:10000")),
        ));
    if let Some(r) = retry {
        b = b.with_retry(r);
    }
    let store = b.build().map_err(|e| e.to_string())?;
    Ok(Built {
        store: Arc::new(store),
        access_hint: "Azure credentials come from AZURE_STORAGE_ACCOUNT_NAME with \
                      AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY or AZURE_STORAGE_TOKEN, \
                      a service principal (AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID), \
                      `az login`, or a managed identity; AZURE_STORAGE_USE_EMULATOR=true for Azurite"
            .into(),
    })
}

#[cfg(not(feature = "azure"))]
fn azure(_: &CloudSpec, _: Option<RetryConfig>, _: Env) -> Result<Built, String> {
    Err("this build has no Azure Blob Storage support (cargo feature 'azure')".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn profiles_read_keys_region_and_endpoint_credentials_file_first() {
        let t = tempfile::tempdir().unwrap();
        let aws = t.path().join(".aws");
        std::fs::create_dir_all(&aws).unwrap();
        std::fs::write(
            aws.join("credentials"),
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\
             [work]\naws_access_key_id=WORK\naws_secret_access_key=worksecret\naws_session_token=tok\n",
        )
        .unwrap();
        std::fs::write(
            aws.join("config"),
            "[default]\nregion = eu-west-1\n[profile work]\nregion = ap-south-1\n\
             endpoint_url = http://127.0.0.1:9000\naws_access_key_id = IGNORED\n\
             [profile sso]\nsso_session = corp\n",
        )
        .unwrap();
        let home = t.path().display().to_string();
        let env = env_of(&[("HOME", home.clone())]);
        let p = AwsProfile::load(None, &env).unwrap().unwrap();
        assert_eq!(
            (p.access_key_id.as_deref(), p.region.as_deref()),
            (Some("DEF"), Some("eu-west-1"))
        );
        let env = env_of(&[("HOME", home.clone()), ("AWS_PROFILE", "work".into())]);
        let p = AwsProfile::load(None, &env).unwrap().unwrap();
        assert_eq!(p.access_key_id.as_deref(), Some("WORK"));
        assert_eq!(p.session_token.as_deref(), Some("tok"));
        assert_eq!(p.region.as_deref(), Some("ap-south-1"));
        assert_eq!(p.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        // The flag beats AWS_PROFILE.
        let p = AwsProfile::load(Some("default"), &env).unwrap().unwrap();
        assert_eq!(p.access_key_id.as_deref(), Some("DEF"));
        let e = AwsProfile::load(Some("nope"), &env).unwrap_err();
        assert!(e.contains("AWS profile 'nope' is not in"), "{e}");
        let e = AwsProfile::load(Some("sso"), &env).unwrap_err();
        assert!(
            e.contains("aws configure export-credentials --profile sso"),
            "{e}"
        );
        // No files and no profile named: nothing, not an error.
        let env = env_of(&[("HOME", "/nonexistent".into())]);
        assert_eq!(AwsProfile::load(None, &env).unwrap(), None);
    }

    #[test]
    fn virtual_hosted_endpoints_carry_the_bucket() {
        assert_eq!(
            with_bucket_host("https://s3.example.com:9000", "b").unwrap(),
            "https://b.s3.example.com:9000"
        );
        assert!(with_bucket_host("s3.example.com", "b").is_err());
    }
}
