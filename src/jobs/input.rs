//! `ferry run`'s input formats, turned into the batch JSONL every job reads.
//!
//! - OpenAI batch JSONL (`{"custom_id", "method", "url", "body"}` per line): used as it is.
//! - `{"prompt": …}` JSONL: each line becomes a chat request of one user message; its
//!   `custom_id` is the line's own `custom_id` or `line-N`, and `model` the line's or the default.
//! - CSV with a header row: each row becomes a prompt through a template whose `{column}`
//!   placeholders take the row's values; `custom_id` is a `custom_id` column or `row-N`.
//!
//! A `--template` also applies to JSONL objects (`{field}` takes the field's value). The format
//! is decided by the file name (`.csv`) and by the first non-blank JSONL line.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde_json::{Map, Value, json};

use super::line::CHAT_ENDPOINT;

/// Why an input file cannot be turned into batch lines.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be read or the converted file written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// A line or row is not what its format needs.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The input file.
        path: String,
        /// 1-based line (CSV: data row + 1 for the header).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The CSV reader failed.
    #[error("{path}: {source}")]
    Csv {
        /// The input file.
        path: String,
        /// What the reader said.
        source: csv::Error,
    },
}

/// How the input is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI batch lines: read as they are.
    Batch,
    /// `{"prompt"}` (or templated) JSONL objects.
    Prompts,
    /// CSV with a header row and a template.
    Csv,
}

/// What to do with prompts that need turning into requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conversion<'a> {
    /// `{column}` template; None: the `prompt` field or column.
    pub template: Option<&'a str>,
    /// Temperature for lines that set none.
    pub temperature: Option<f32>,
    /// Reply budget for lines that set none.
    pub max_tokens: Option<u32>,
    /// Model for requests whose line names none.
    pub model: &'a str,
}

/// The format of `path`.
pub fn detect(path: &Path, template: Option<&str>) -> Result<Format, InputError> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        return Ok(Format::Csv);
    }
    if template.is_some() {
        return Ok(Format::Prompts);
    }
    let file = File::open(path).map_err(|e| io(path, e))?;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|e| InputError::Line {
            path: path.display().to_string(),
            line: index as u64 + 1,
            message: format!("not a JSON line ({e}); give a .csv file a .csv name"),
        })?;
        let batch = value.get("custom_id").is_some() && value.get("body").is_some();
        return Ok(if batch { Format::Batch } else { Format::Prompts });
    }
    Ok(Format::Batch)
}

fn io(path: &Path, source: std::io::Error) -> InputError {
    InputError::Io { path: path.display().to_string(), source }
}

/// Writes `input` (in `format`, not `Batch`) as batch JSONL to `out` (through a temporary file
/// renamed into place); returns the lines written. Streams: memory does not grow with the file.
pub fn convert(input: &Path, format: Format, how: &Conversion<'_>, out: &Path) -> Result<u64, InputError> {
    let temp = out.with_extension("partial");
    let file = super::db::private_file(&temp).map_err(|e| io(&temp, e))?;
    let mut writer = BufWriter::with_capacity(1 << 16, file);
    let lines = match format {
        Format::Csv => convert_csv(input, how, &mut writer)?,
        Format::Prompts | Format::Batch => convert_jsonl(input, how, &mut writer)?,
    };
    let file = writer.into_inner().map_err(|e| io(&temp, e.into_error()))?;
    file.sync_all().map_err(|e| io(&temp, e))?;
    std::fs::rename(&temp, out).map_err(|e| io(out, e))?;
    Ok(lines)
}

fn convert_jsonl(input: &Path, how: &Conversion<'_>, out: &mut impl Write) -> Result<u64, InputError> {
    let file = File::open(input).map_err(|e| io(input, e))?;
    let mut written = 0;
    for (index, line) in BufReader::with_capacity(1 << 16, file).lines().enumerate() {
        let number = index as u64 + 1;
        let line = line.map_err(|e| io(input, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad =
            |message: String| InputError::Line { path: input.display().to_string(), line: number, message };
        let value: Value = serde_json::from_str(&line).map_err(|e| bad(format!("not a JSON line: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(bad("each line must be a JSON object".into()));
        };
        let prompt = match how.template {
            Some(template) => fill(template, |name| fields.get(name).map(text_of)).map_err(bad)?,
            None => match fields.get("prompt") {
                Some(Value::String(prompt)) => prompt.clone(),
                _ => return Err(bad("the line has no \"prompt\" string (or give --template)".into())),
            },
        };
        let custom_id = match fields.get("custom_id") {
            Some(id) => text_of(id),
            None => format!("line-{number}"),
        };
        let model = fields.get("model").and_then(Value::as_str).unwrap_or(how.model);
        write_line(out, &custom_id, model, prompt, &fields, how).map_err(|e| io(input, e))?;
        written += 1;
    }
    Ok(written)
}

fn convert_csv(input: &Path, how: &Conversion<'_>, out: &mut impl Write) -> Result<u64, InputError> {
    let csv_error = |source| InputError::Csv { path: input.display().to_string(), source };
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_path(input).map_err(csv_error)?;
    let headers = reader.headers().map_err(csv_error)?.clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (id_column, prompt_column) = (column("custom_id"), column("prompt"));
    if how.template.is_none() && prompt_column.is_none() {
        return Err(InputError::Line {
            path: input.display().to_string(),
            line: 1,
            message: "the CSV has no `prompt` column; give --template with {column} placeholders".into(),
        });
    }
    let mut record = csv::StringRecord::new();
    let mut written = 0;
    let mut row = 0u64;
    while reader.read_record(&mut record).map_err(csv_error)? {
        row += 1;
        let line = record.position().map_or(row + 1, |p| p.line());
        let bad = |message: String| InputError::Line { path: input.display().to_string(), line, message };
        let prompt = match how.template {
            Some(template) => {
                fill(template, |name| column(name).and_then(|i| record.get(i)).map(str::to_string))
                    .map_err(bad)?
            }
            None => prompt_column.and_then(|i| record.get(i)).unwrap_or_default().to_string(),
        };
        let custom_id = match id_column.and_then(|i| record.get(i)) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => format!("row-{row}"),
        };
        write_line(out, &custom_id, how.model, prompt, &Map::new(), how).map_err(|e| io(input, e))?;
        written += 1;
    }
    Ok(written)
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// `template` with each `{name}` replaced by `value(name)`; `{{` and `}}` are literal braces.
pub fn fill(template: &str, value: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err("the template has a `}` without its `{` (write `}}` for a literal brace)".into());
        }
        let Some(end) = tail.find('}') else {
            return Err("the template has a `{` without its `}` (write `{{` for a literal brace)".into());
        };
        let name = &tail[1..end];
        match value(name) {
            Some(text) => out.push_str(&text),
            None => return Err(format!("the template names `{name}`, which this line does not have")),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn write_line(
    out: &mut impl Write,
    custom_id: &str,
    model: &str,
    prompt: String,
    fields: &Map<String, Value>,
    how: &Conversion<'_>,
) -> std::io::Result<()> {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": prompt}]});
    // The line's own, else the run's (`--max-tokens`, `--temperature`).
    let defaults = [
        ("max_tokens", how.max_tokens.map(Value::from)),
        ("temperature", how.temperature.and_then(|t| t.to_string().parse::<f64>().ok()).map(Value::from)),
    ];
    for (key, default) in defaults {
        if let Some(value) = fields.get(key).cloned().or(default) {
            body[key] = value;
        }
    }
    let line = json!({"custom_id": custom_id, "method": "POST", "url": CHAT_ENDPOINT, "body": body});
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_named_values_and_keep_escaped_braces() {
        let value = |name: &str| (name == "city").then(|| "Oslo".to_string());
        assert_eq!(fill("Weather in {city}? {{json}}", value), Ok("Weather in Oslo? {json}".into()));
        assert!(fill("{country}", value).is_err_and(|e| e.contains("country")));
        assert!(fill("{city", value).is_err());
        assert!(fill("city}", value).is_err());
    }

    #[test]
    fn csv_and_prompt_lines_become_batch_lines() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let csv = dir.path().join("in.csv");
        std::fs::write(&csv, "city,custom_id\nOslo,a\n\"Rio, de Janeiro\",\n")?;
        let out = dir.path().join("out.jsonl");
        let how = Conversion { template: Some("Capital of {city}?"), model: "m", ..Conversion::default() };
        assert_eq!(convert(&csv, detect(&csv, how.template)?, &how, &out)?, 2);
        let lines: Vec<Value> =
            std::fs::read_to_string(&out)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        assert_eq!(lines[0]["custom_id"], "a");
        assert_eq!(lines[1]["custom_id"], "row-2");
        assert_eq!(lines[1]["body"]["messages"][0]["content"], "Capital of Rio, de Janeiro?");

        let jsonl = dir.path().join("in.jsonl");
        std::fs::write(
            &jsonl,
            "{\"prompt\":\"hi\"}\n\n{\"prompt\":\"yo\",\"custom_id\":\"x\",\"max_tokens\":3}\n",
        )?;
        let how = Conversion { template: None, model: "m", ..Conversion::default() };
        assert_eq!(detect(&jsonl, None)?, Format::Prompts);
        assert_eq!(convert(&jsonl, Format::Prompts, &how, &out)?, 2);
        let text = std::fs::read_to_string(&out)?;
        let lines: Vec<Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        assert_eq!(lines[0]["custom_id"], "line-1");
        assert_eq!(lines[1]["custom_id"], "x");
        assert_eq!(lines[1]["body"]["max_tokens"], 3);
        Ok(())
    }

    #[test]
    fn run_parameters_fill_what_a_line_leaves_unset() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let jsonl = dir.path().join("in.jsonl");
        std::fs::write(
            &jsonl,
            "{\"prompt\":\"hi\"}\n{\"prompt\":\"yo\",\"temperature\":0.5,\"max_tokens\":3}\n",
        )?;
        let out = dir.path().join("out.jsonl");
        let how =
            Conversion { model: "m", temperature: Some(0.0), max_tokens: Some(16), ..Conversion::default() };
        assert_eq!(convert(&jsonl, Format::Prompts, &how, &out)?, 2);
        let lines: Vec<Value> =
            std::fs::read_to_string(&out)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        assert_eq!(
            (&lines[0]["body"]["temperature"], &lines[0]["body"]["max_tokens"]),
            (&json!(0.0), &json!(16))
        );
        assert_eq!(
            (&lines[1]["body"]["temperature"], &lines[1]["body"]["max_tokens"]),
            (&json!(0.5), &json!(3))
        );
        Ok(())
    }

    #[test]
    fn a_prompt_line_without_a_prompt_names_its_line() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let jsonl = dir.path().join("in.jsonl");
        std::fs::write(&jsonl, "{\"prompt\":\"hi\"}\n{\"text\":\"no\"}\n")?;
        let how = Conversion { template: None, model: "m", ..Conversion::default() };
        match convert(&jsonl, Format::Prompts, &how, &dir.path().join("out.jsonl")) {
            Err(InputError::Line { line: 2, .. }) => Ok(()),
            other => panic!("expected an error on line 2, got {other:?}"),
        }
    }
}
