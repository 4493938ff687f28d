//! Conditional and range requests on a file the edge serves itself (a static
//! asset, an X-Accel-Redirect attachment): If-None-Match, If-Modified-Since,
//! If-Range and a single `bytes=` range, as werkzeug's `send_file` does them.

use std::ops::Range;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

/// What the edge knows about the representation it serves.
pub struct Validators<'a> {
    pub len: u64,
    /// The quoted ETag, if any.
    pub etag: Option<&'a str>,
    pub modified: Option<SystemTime>,
    /// Last-Modified as sent (for If-Range).
    pub last_modified: Option<&'a str>,
}

/// If-None-Match (any form of the ETag) or, without it, If-Modified-Since.
pub fn not_modified(headers: &HeaderMap, v: &Validators<'_>) -> bool {
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let Some(base) = v.etag.map(|e| e.trim_start_matches("W/").trim_matches('"')) else {
            return inm.trim() == "*";
        };
        return inm.split(',').any(|tag| {
            let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
            tag == "*"
                || tag == base
                || tag
                    .strip_prefix(base)
                    .is_some_and(|s| s == "-br" || s == "-gzip")
        });
    }
    let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    let Some(modified) = v.modified else {
        return false;
    };
    let modified = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    modified <= since
}

pub enum RangeAsk {
    Whole,
    Part(Range<u64>),
    Unsatisfiable,
}

/// One `bytes=` range; several ranges, or an If-Range that does not match,
/// get the whole file (allowed by RFC 9110 §14.2).
pub fn range(headers: &HeaderMap, v: &Validators<'_>) -> RangeAsk {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAsk::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && Some(if_range.trim()) != v.etag
        && Some(if_range.trim()) != v.last_modified
    {
        return RangeAsk::Whole;
    }
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if set.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let len = v.len;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        // The last N bytes.
        match last.parse::<u64>() {
            Ok(0) | Err(_) => return RangeAsk::Unsatisfiable,
            Ok(n) => len.saturating_sub(n)..len,
        }
    } else {
        let Ok(start) = first.parse::<u64>() else {
            return RangeAsk::Whole;
        };
        let end = if last.is_empty() {
            len
        } else {
            match last.parse::<u64>() {
                Ok(last) if last >= start => last.saturating_add(1).min(len),
                _ => return RangeAsk::Whole,
            }
        };
        if start >= len {
            return RangeAsk::Unsatisfiable;
        }
        start..end
    };
    if range.is_empty() {
        RangeAsk::Unsatisfiable
    } else {
        RangeAsk::Part(range)
    }
}

/// Sets the status, Content-Range and Content-Length for `ask` on a response
/// that is otherwise ready; returns the bytes to send, or `None` for a 416.
pub fn apply_range<B>(response: &mut Response<B>, ask: RangeAsk, len: u64) -> Option<Range<u64>> {
    let (status, range, content_range) = match ask {
        RangeAsk::Whole => (StatusCode::OK, 0..len, None),
        RangeAsk::Part(r) => {
            let value = format!("bytes {}-{}/{len}", r.start, r.end - 1);
            (StatusCode::PARTIAL_CONTENT, r, Some(value))
        }
        RangeAsk::Unsatisfiable => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            0..0,
            Some(format!("bytes */{len}")),
        ),
    };
    if status != StatusCode::OK {
        *response.status_mut() = status;
    }
    let h = response.headers_mut();
    if let Some(value) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        h.insert(header::CONTENT_RANGE, value);
    }
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    (status != StatusCode::RANGE_NOT_SATISFIABLE).then_some(range)
}
