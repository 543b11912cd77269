//! What `--to s3://…`, `gs://…` or `az://…` names, with the flags that say how to reach
//! it; read by the sink and by the store builders.

use crate::sink::api::UrlStyle;

/// Which object store service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Amazon S3 and S3-compatible servers (`s3://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage (`az://`).
    Azure,
}

impl Cloud {
    /// The URL scheme, without `://`.
    pub fn scheme(self) -> &'static str {
        match self {
            Cloud::S3 => "s3",
            Cloud::Gcs => "gs",
            Cloud::Azure => "az",
        }
    }
    /// A user-metadata name as this store allows it: Azure wants a C# identifier
    /// (`ferry_source_size`), the others take `ferry-source-size`.
    pub fn meta_name(self, name: &str) -> std::borrow::Cow<'static, str> {
        match self {
            Cloud::Azure => name.replace('-', "_").into(),
            _ => name.to_string().into(),
        }
    }

    /// What a bucket is called there.
    pub fn bucket_word(self) -> &'static str {
        match self {
            Cloud::Azure => "container",
            _ => "bucket",
        }
    }
}

/// Where objects go and how to reach them: the store, bucket (or container), key
/// prefix, and the options given as flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSpec {
    /// Which service.
    pub cloud: Cloud,
    /// The bucket (Azure: the container).
    pub bucket: String,
    /// The key prefix (no leading or trailing `/`), possibly empty.
    pub prefix: String,
    /// `--endpoint-url`: a server other than the cloud's own (else from the environment).
    pub endpoint: Option<String>,
    /// `--url-style` (S3): `None` picks path style for a custom endpoint, else virtual.
    pub url_style: Option<UrlStyle>,
    /// `--profile` (S3): the AWS named profile, before `AWS_PROFILE`.
    pub profile: Option<String>,
    /// `--storage-class`: the class (tier) new objects are stored in.
    pub storage_class: Option<String>,
}

impl CloudSpec {
    /// Parses `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix` (the
    /// prefix may be empty); the options start unset.
    ///
    /// # Errors
    /// A message when the scheme is not one of these or the bucket is missing.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (cloud, rest) = [Cloud::S3, Cloud::Gcs, Cloud::Azure]
            .into_iter()
            .find_map(|c| {
                spec.strip_prefix(&format!("{}://", c.scheme()))
                    .map(|r| (c, r))
            })
            .ok_or_else(|| {
                "expected s3://, gs:// or az:// followed by bucket/prefix".to_string()
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "the {} name is empty ({}://{}/prefix)",
                cloud.bucket_word(),
                cloud.scheme(),
                cloud.bucket_word()
            ));
        }
        check_bucket(cloud, bucket)?;
        let prefix = prefix.trim_matches('/');
        check_prefix(prefix)?;
        Ok(CloudSpec {
            cloud,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            url_style: None,
            profile: None,
            storage_class: None,
        })
    }

    /// `scheme://bucket/prefix`.
    pub fn url(&self) -> String {
        format!("{}://{}/{}", self.cloud.scheme(), self.bucket, self.prefix)
    }
}

/// Whether `name` follows the store's naming rules for a bucket (S3: 3–63 of `a-z 0-9 . -`;
/// GCS: 3–63 of `a-z 0-9 . - _`, up to 222 with dots; Azure: 3–63 of `a-z 0-9 -`, no
/// `--`), starting and ending with a letter or digit. Checked before any request, so that
/// text such as `bucket?acl` never becomes part of a request's URL.
fn check_bucket(cloud: Cloud, name: &str) -> Result<(), String> {
    let word = cloud.bucket_word();
    let (extra, max): (&[u8], usize) = match cloud {
        Cloud::S3 => (b".-", 63),
        Cloud::Gcs if name.contains('.') => (b".-_", 222),
        Cloud::Gcs => (b".-_", 63),
        Cloud::Azure => (b"-", 63),
    };
    let bad = |why: &str| {
        Err(format!(
            "{word} name {name:?} is not valid for {}: {why}",
            cloud.scheme()
        ))
    };
    if name.len() < 3 || name.len() > max {
        return bad(&format!("it must be 3 to {max} characters"));
    }
    if let Some(c) = name
        .bytes()
        .find(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(b)))
    {
        return bad(&format!(
            "{:?} is not allowed (lowercase letters, digits and {:?} only)",
            c as char,
            String::from_utf8_lossy(extra)
        ));
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !alnum(name.bytes().next()) || !alnum(name.bytes().last()) {
        return bad("it must start and end with a letter or a digit");
    }
    if name.contains("..") || (cloud == Cloud::Azure && name.contains("--")) {
        return bad("no two dots (or, on Azure, hyphens) in a row");
    }
    Ok(())
}

/// Whether a key prefix is plain: no control characters, and no empty, `.` or `..`
/// segment (which stores and clients resolve differently).
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.chars().any(char::is_control) {
        return Err(format!(
            "the key prefix {:?} has a control character",
            crate::words::escaped(prefix)
        ));
    }
    if let Some(seg) = prefix
        .split('/')
        .find(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(format!(
            "the key prefix {prefix:?} has a segment {seg:?} (empty, `.` or `..`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        let s = CloudSpec::parse("s3://bkt/a/b/").unwrap();
        assert_eq!(
            (s.cloud, s.bucket.as_str(), s.prefix.as_str()),
            (Cloud::S3, "bkt", "a/b")
        );
        assert_eq!(CloudSpec::parse("s3://bkt").unwrap().prefix, "");
        assert!(CloudSpec::parse("s3:///x").is_err());
        let g = CloudSpec::parse("gs://logs/2026").unwrap();
        assert_eq!(
            (g.cloud, g.url()),
            (Cloud::Gcs, "gs://logs/2026".to_string())
        );
        let a = CloudSpec::parse("az://box").unwrap();
        assert_eq!((a.cloud, a.bucket.as_str()), (Cloud::Azure, "box"));
        let e = CloudSpec::parse("az:///p").unwrap_err();
        assert!(e.contains("container name is empty"), "{e}");
    }

    #[test]
    fn names_outside_each_stores_rules_are_refused_before_any_request() {
        for bad in [
            "s3://bucket?acl",
            "s3://bucket?acl/x",
            "s3://Upper",
            "s3://ab",
            "s3://-lead",
            "s3://a..b",
            "s3://under_score",
            "az://two--hyphens",
            "az://dot.ted",
            "gs://sp ace",
            "s3://bkt/a//b",
            "s3://bkt/a/../b",
            "s3://bkt/a/\x1b[31m",
        ] {
            assert!(CloudSpec::parse(bad).is_err(), "{bad:?}");
        }
        for good in [
            "s3://my-bucket.logs/p",
            "gs://under_score/p",
            "az://ferry-test/run",
        ] {
            assert!(CloudSpec::parse(good).is_ok(), "{good}");
        }
        let e = CloudSpec::parse("s3://bucket?acl").unwrap_err();
        assert!(e.contains("'?' is not allowed"), "{e}");
    }
}
