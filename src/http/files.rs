//! `/v1/files`: OpenAI's Files API, for batch input (seed 001).
//!
//! - `POST /v1/files`, multipart with fields `purpose` (`batch`) and `file`: the content streams
//!   to disk as it arrives (never whole in memory), up to `[files] max_bytes` (413 naming `file`
//!   past it), and the file object comes back. `[server] max_body_bytes` caps JSON bodies only.
//! - `GET /v1/files` (`?purpose=`, `?limit=` 1..=10000, default 10000, `?after=<file id>`):
//!   `{object: "list", data, has_more, first_id, last_id}`, newest first.
//! - `GET /v1/files/{file_id}`, `DELETE /v1/files/{file_id}` (`{id, object, deleted}`) and
//!   `GET /v1/files/{file_id}/content` (the bytes, streamed from disk).
//!
//! A file belongs to the key that uploaded it: another key gets the 404 a missing file gets.

use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::record::store_unavailable;
use super::{ApiError, AppState, Caller};
use crate::store::{ContentWriter, FileObject, PURPOSE_BATCH, Store, is_file_id, new_file_id};

/// Files per page when `limit` is absent (OpenAI's default).
pub const DEFAULT_LIMIT: usize = 10_000;
/// Most files one page may hold.
pub const MAX_LIMIT: usize = 10_000;
/// Room for the form around the file (boundaries, part headers, `purpose`) when a declared
/// `Content-Length` is checked against `[files] max_bytes` before anything is read.
const FORM_OVERHEAD: u64 = 64 * 1024;
/// Largest value of a text field (`purpose`, or a field ferry ignores).
const TEXT_FIELD_LIMIT: usize = 64 * 1024;
/// Shortest `expires_after[seconds]` OpenAI accepts: an hour.
const EXPIRES_MIN_SECS: i64 = 3_600;
/// Longest: 30 days.
const EXPIRES_MAX_SECS: i64 = 30 * 86_400;
/// Longest file name kept, in characters.
const FILENAME_LIMIT: usize = 255;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/files").route(web::post().to(upload)).route(web::get().to(list)))
        .service(
            web::resource("/v1/files/{file_id}")
                .route(web::get().to(retrieve))
                .route(web::delete().to(delete)),
        )
        .service(web::resource("/v1/files/{file_id}/content").route(web::get().to(content)));
}

async fn upload(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    mut form: Multipart,
) -> Result<web::Json<FileObject>, ApiError> {
    require_form(&req)?;
    let limit = state.config.files.max_bytes;
    if declared_length(&req).is_some_and(|length| length > limit.saturating_add(FORM_OVERHEAD)) {
        return Err(ApiError::FileTooLarge { limit });
    }
    let quota = state.config.files.max_bytes_per_owner;
    let used = match quota {
        0 => 0,
        _ => {
            state.store.owner_bytes(caller.key_id.clone()).await.map_err(store_unavailable("owner_bytes"))?
        }
    };
    let room = if quota == 0 { u64::MAX } else { quota.saturating_sub(used) };
    let quota_error = || ApiError::QuotaExceeded { limit: quota, used };
    if room == 0 {
        return Err(quota_error());
    }
    let id = new_file_id();
    let mut purpose = None;
    let mut expires_after: Option<i64> = None;
    let mut upload: Option<(String, ContentWriter)> = None;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(form_error)?;
        match field.name() {
            Some("purpose") => purpose = Some(read_purpose(&mut field).await?),
            Some("file") if upload.is_some() => {
                return Err(ApiError::bad("file", "send one `file` field per upload"));
            }
            Some("file") => {
                let filename = filename_of(&field);
                let writer = match receive(&state.store, &id, &mut field, limit.min(room)).await {
                    Err(ApiError::FileTooLarge { .. }) if room < limit => return Err(quota_error()),
                    other => other?,
                };
                upload = Some((filename, writer));
            }
            // OpenAI's `expires_after`: the anchor must be `created_at`, the seconds 1 h to 30 days.
            Some("expires_after[anchor]") => read_anchor(&mut field).await?,
            Some("expires_after[seconds]") => {
                let text = read_text(&mut field, "expires_after[seconds]").await?;
                match text.trim().parse::<i64>() {
                    Ok(seconds) if (EXPIRES_MIN_SECS..=EXPIRES_MAX_SECS).contains(&seconds) => {
                        expires_after = Some(seconds);
                    }
                    _ => {
                        return Err(ApiError::bad(
                            "expires_after[seconds]",
                            format!(
                                "must be a whole number of seconds from {EXPIRES_MIN_SECS} to {EXPIRES_MAX_SECS}"
                            ),
                        ));
                    }
                }
            }
            // Other fields are read and ignored.
            Some(name) => {
                let name = crate::request_json::shown_name(name);
                read_text(&mut field, &name).await?;
            }
            None => {}
        }
    }
    let purpose = purpose
        .ok_or_else(|| ApiError::bad("purpose", "the form has no `purpose` field; send purpose=batch"))?;
    let (filename, writer) = upload.ok_or_else(|| {
        ApiError::bad(
            "file",
            "the form has no `file` field; send the JSONL file as `file` (curl -F file=@requests.jsonl)",
        )
    })?;
    if writer.bytes() == 0 {
        return Err(ApiError::bad("file", "the file is empty"));
    }
    // Only now, with the whole form read and valid, does the content take its id.
    let bytes = writer.finish().await.map_err(store_unavailable("write_file_content"))?;
    let mut file = FileObject { id, ..FileObject::new(caller.key_id, &purpose, &filename, bytes) };
    file.expires_at = expires_after.map(|seconds| file.created_at.saturating_add(seconds));
    state.store.add_file(file.clone()).await.map_err(store_unavailable("add_file"))?;
    tracing::info!(event = "file_uploaded", file_id = %file.id, bytes, purpose = %file.purpose);
    Ok(web::Json(file))
}

/// Refuses a body that is not `multipart/form-data` with a 415 that says what to send.
fn require_form(req: &HttpRequest) -> Result<(), ApiError> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("multipart/form-data") {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(
        "the body must be multipart/form-data with fields `purpose` and `file` \
         (curl -F purpose=batch -F file=@requests.jsonl)"
            .into(),
    ))
}

fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// A multipart framing error: the form is broken or was cut off.
fn form_error(error: MultipartError) -> ApiError {
    ApiError::BadRequest { message: format!("invalid multipart form: {error}"), param: None }
}

/// Reads a text field whole, refusing one over [`TEXT_FIELD_LIMIT`].
async fn read_text(field: &mut Field, name: &str) -> Result<String, ApiError> {
    let bytes = match field.bytes(TEXT_FIELD_LIMIT).await {
        Ok(read) => read.map_err(form_error)?,
        Err(_) => {
            return Err(ApiError::bad(name, format!("`{name}` is longer than {TEXT_FIELD_LIMIT} bytes")));
        }
    };
    String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::bad(name, format!("`{name}` must be UTF-8 text")))
}

/// The `expires_after[anchor]` field, which must be `created_at` (OpenAI's only anchor).
async fn read_anchor(field: &mut Field) -> Result<(), ApiError> {
    if read_text(field, "expires_after[anchor]").await?.trim() != "created_at" {
        return Err(ApiError::bad("expires_after[anchor]", "the anchor must be \"created_at\""));
    }
    Ok(())
}

/// The `purpose` field, which must be `batch` for an upload.
async fn read_purpose(field: &mut Field) -> Result<String, ApiError> {
    let purpose = read_text(field, "purpose").await?;
    let purpose = purpose.trim();
    if purpose != PURPOSE_BATCH {
        return Err(ApiError::bad(
            "purpose",
            format!(
                "purpose must be \"batch\" (got a value of {} bytes); ferry accepts uploads for the Batch API only",
                purpose.len()
            ),
        ));
    }
    Ok(purpose.to_string())
}

/// The file's name as the client gave it, reduced to a plain name: never used as a path.
fn filename_of(field: &Field) -> String {
    let given = field.content_disposition().and_then(|cd| cd.get_filename()).unwrap_or("");
    let base = given.rsplit(['/', '\\']).next().unwrap_or("");
    let name: String = base.chars().filter(|c| !c.is_control()).take(FILENAME_LIMIT).collect();
    let name = name.trim();
    if name.is_empty() { "file".to_string() } else { name.to_string() }
}

/// Streams the `file` field to a temporary file, refusing it past `limit` bytes. The writer is
/// returned unfinished: dropped on a later error, it leaves nothing behind.
async fn receive(store: &Store, id: &str, field: &mut Field, limit: u64) -> Result<ContentWriter, ApiError> {
    let mut writer = store.content_writer(id).await.map_err(store_unavailable("write_file_content"))?;
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(form_error)?;
        if writer.bytes().saturating_add(chunk.len() as u64) > limit {
            return Err(ApiError::FileTooLarge { limit });
        }
        writer.write(&chunk).await.map_err(store_unavailable("write_file_content"))?;
    }
    Ok(writer)
}

/// The query string of `GET /v1/files`, as text so each bad value is reported by its name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only files with this purpose.
    pub purpose: Option<String>,
    /// At most this many.
    pub limit: Option<String>,
    /// Only files after this one (the `last_id` of the previous page).
    pub after: Option<String>,
}

/// `GET /v1/files`'s reply, OpenAI's list shape.
#[derive(Debug, Serialize)]
pub struct FileList {
    /// Always `"list"`.
    pub object: &'static str,
    /// The files, newest first.
    pub data: Vec<FileObject>,
    /// Whether more follow `last_id`.
    pub has_more: bool,
    /// The first file's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_id: Option<String>,
    /// The last file's id: pass it as `after` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_id: Option<String>,
}

async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    params: web::Query<ListParams>,
) -> Result<web::Json<FileList>, ApiError> {
    let params = params.into_inner();
    let limit = parse_limit(params.limit.as_deref())?;
    if let Some(after) = params.after.as_deref().filter(|after| !is_file_id(after)) {
        return Err(ApiError::bad(
            "after",
            format!("after must be a file id like file-01J… (got a value of {} bytes)", after.len()),
        ));
    }
    if params.purpose.as_deref().is_some_and(|p| p.trim().is_empty()) {
        return Err(ApiError::bad("purpose", "purpose must not be empty when given"));
    }
    let page = state
        .store
        .list_files(caller.key_id, params.purpose, limit, params.after)
        .await
        .map_err(store_unavailable("list_files"))?;
    Ok(web::Json(FileList {
        object: "list",
        first_id: page.data.first().map(|f| f.id.clone()),
        last_id: page.data.last().map(|f| f.id.clone()),
        data: page.data,
        has_more: page.has_more,
    }))
}

fn parse_limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else { return Ok(DEFAULT_LIMIT) };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad(
            "limit",
            format!(
                "limit must be a whole number from 1 to {MAX_LIMIT} (got a value of {} bytes)",
                text.len()
            ),
        )),
    }
}

/// The caller's file `id`, or the 404 a missing file gets.
async fn owned_file(state: &AppState, caller: Caller, id: String) -> Result<FileObject, ApiError> {
    let not_found = |id: &str| {
        let message = if is_file_id(id) {
            format!("no such file: {id}")
        } else {
            format!("no such file: not a file id (a value of {} bytes; file ids are file-<ULID>)", id.len())
        };
        ApiError::UnknownId { message, param: "file_id" }
    };
    if !is_file_id(&id) {
        return Err(not_found(&id));
    }
    match state.store.file(caller.key_id, id.clone()).await.map_err(store_unavailable("get_file"))? {
        Some(file) => Ok(file),
        None => Err(not_found(&id)),
    }
}

async fn retrieve(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<web::Json<FileObject>, ApiError> {
    Ok(web::Json(owned_file(&state, caller, id.into_inner()).await?))
}

/// `DELETE /v1/files/{file_id}`'s reply.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// The file's id.
    pub id: String,
    /// Always `"file"`.
    pub object: &'static str,
    /// Always true (a file that is not there is a 404).
    pub deleted: bool,
}

async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<web::Json<Deleted>, ApiError> {
    let file = owned_file(&state, caller.clone(), id.into_inner()).await?;
    let deleted = state
        .store
        .delete_file(caller.key_id, file.id.clone())
        .await
        .map_err(store_unavailable("delete_file"))?;
    if !deleted {
        // Deleted by a concurrent request between the lookup and now.
        return Err(ApiError::UnknownId { message: format!("no such file: {}", file.id), param: "file_id" });
    }
    tracing::info!(event = "file_deleted", file_id = %file.id);
    Ok(web::Json(Deleted { id: file.id, object: "file", deleted: true }))
}

async fn content(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let file = owned_file(&state, caller, id.into_inner()).await?;
    let (size, stream) =
        state.store.file_content(&file).await.map_err(store_unavailable("read_file_content"))?;
    Ok(HttpResponse::Ok().content_type("application/octet-stream").body(SizedStream::new(size, stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_is_bounded() {
        assert_eq!(parse_limit(None).ok(), Some(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("7")).ok(), Some(7));
        for bad in ["0", "10001", "x", "-1"] {
            match parse_limit(Some(bad)) {
                Err(ApiError::BadRequest { param: Some(param), .. }) => assert_eq!(param, "limit"),
                other => panic!("{bad}: expected a 400 naming limit, got {other:?}"),
            }
        }
    }
}
