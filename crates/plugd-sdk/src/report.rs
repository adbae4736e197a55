//! Reports: links and HTML pages a plugin attaches to its invocation (the qci-plugin SDK's
//! `report_output`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// One report. At least one of `description`, `url` and `report_html` is required; `url` excludes
/// `report_html` and `report_dir`; `report_dir` needs `report_html`, its index page, inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// A title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A short text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A link to a report kept elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A local HTML file (with `report_dir`: its index page, relative to the folder or inside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_html: Option<String>,
    /// A local folder of HTML and assets, kept with the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_dir: Option<String>,
}

/// A [`Report`] that breaks a rule of `report_output`; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// None of `description`, `url` and `report_html`.
    Empty,
    /// `url` with `report_html` or `report_dir`.
    UrlWithFiles,
    /// `report_dir` without `report_html`, its index page.
    DirWithoutIndex,
    /// A `url` that is not an `http://` or `https://` URL.
    NotHttpUrl {
        /// The URL given.
        url: String,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Empty => f.write_str("a report needs one of description, url or report_html"),
            ReportError::UrlWithFiles => f.write_str("url excludes report_html and report_dir"),
            ReportError::DirWithoutIndex => f.write_str("report_dir needs report_html as its index page"),
            ReportError::NotHttpUrl { url } => write!(f, "url must be an http(s) URL, got {url:?}"),
        }
    }
}

impl std::error::Error for ReportError {}

impl Report {
    /// Checks the rules of `report_output`; the error names the field.
    pub fn validate(&self) -> Result<(), ReportError> {
        if self.description.is_none() && self.url.is_none() && self.report_html.is_none() {
            return Err(ReportError::Empty);
        }
        if self.url.is_some() && (self.report_html.is_some() || self.report_dir.is_some()) {
            return Err(ReportError::UrlWithFiles);
        }
        if self.report_dir.is_some() && self.report_html.is_none() {
            return Err(ReportError::DirWithoutIndex);
        }
        if let Some(url) = &self.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ReportError::NotHttpUrl { url: url.clone() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(fields: serde_json::Value) -> Result<(), String> {
        let report: Report = serde_json::from_value(fields).map_err(|e| e.to_string())?;
        report.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn the_report_output_rules() {
        use serde_json::json;
        assert_eq!(report(json!({"title": "t", "description": "ok"})), Ok(()));
        assert_eq!(report(json!({"url": "https://ci.example/r/1"})), Ok(()));
        assert_eq!(report(json!({"report_html": "index.html", "report_dir": "out"})), Ok(()));
        assert_eq!(report(json!({"title": "t"})), Err("a report needs one of description, url or report_html".into()));
        assert_eq!(
            report(json!({"url": "https://x", "report_html": "a.html"})),
            Err("url excludes report_html and report_dir".into())
        );
        assert_eq!(
            report(json!({"description": "d", "report_dir": "out"})),
            Err("report_dir needs report_html as its index page".into())
        );
        assert_eq!(
            report(json!({"url": "file:///etc/passwd"})),
            Err("url must be an http(s) URL, got \"file:///etc/passwd\"".into())
        );
        assert!(report(json!({"titel": "typo"})).unwrap_err().contains("unknown field `titel`"));
        let file = Report { url: Some("file:///etc/passwd".into()), ..Report::default() };
        assert_eq!(file.validate(), Err(ReportError::NotHttpUrl { url: "file:///etc/passwd".into() }));
    }
}
