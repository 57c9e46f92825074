//! `eventide send`: one event or an array from the argument, one built from flags, or
//! JSON/NDJSON read from stdin; prints the server's answer (`--json`) or a one-line summary.

use std::io::Read;

use clap::Args;
use serde_json::{Map, Value};

use super::{refusal, Client, Connection, Failure, Outcome};

#[derive(Args, Debug)]
pub struct SendArgs {
    /// The event (a JSON object) or events (an array). Without it and without --type or
    /// --message, events are read from stdin (JSON, or NDJSON: one per line).
    pub event: Option<String>,
    /// Build the event from flags: its type.
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Its service.
    #[arg(long)]
    pub service: Option<String>,
    /// Its user id.
    #[arg(long = "user")]
    pub user: Option<String>,
    /// Its message.
    #[arg(long)]
    pub message: Option<String>,
    /// A metadata entry `key=value` (repeatable); a value that is JSON (42, true, {"a":1})
    /// is kept as such, any other as a string.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Print the server's answer as it is (JSON) instead of a summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run(args: SendArgs) -> Outcome {
    let client = Client::new(&args.connection)?;
    let built = args.kind.is_some()
        || args.service.is_some()
        || args.user.is_some()
        || args.message.is_some()
        || !args.meta.is_empty();
    let (body, content_type) =
        match (&args.event, built) {
            (Some(_), true) => return Err(Failure::Usage(
                "give the event as JSON or with --type/--service/--user/--message/--meta, not both"
                    .into(),
            )),
            (Some(text), false) => {
                serde_json::from_str::<Value>(text)
                    .map_err(|err| Failure::Usage(format!("the event is not JSON: {err}")))?;
                (text.clone().into_bytes(), "application/json")
            }
            (None, true) => (
                serde_json::to_vec(&build(&args)?).expect("JSON"),
                "application/json",
            ),
            (None, false) => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|err| Failure::Usage(format!("cannot read stdin: {err}")))?;
                if text.trim().is_empty() {
                    return Err(Failure::Usage(
                        "no event: give one as an argument, with --type, or on stdin".into(),
                    ));
                }
                // One JSON document (an object or an array), or else NDJSON.
                let kind = if serde_json::from_str::<Value>(&text).is_ok() {
                    "application/json"
                } else {
                    "application/x-ndjson"
                };
                (text.into_bytes(), kind)
            }
        };
    let response = client
        .send(
            client
                .post("/events")
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        )
        .await?;
    let status = response.status().as_u16();
    if status != 202 && !(status == 400 && is_no_valid_events(&response)) {
        return Err(refusal(response).await);
    }
    let text = response
        .text()
        .await
        .map_err(|err| client.unreachable(&err))?;
    let answer: Value = serde_json::from_str(&text)
        .map_err(|err| Failure::Usage(format!("the server's answer is not JSON: {err}")))?;
    if args.json {
        println!("{text}");
    } else {
        println!("{}", summary(&answer));
    }
    let errors = answer["errors"].as_array().map_or(0, Vec::len);
    if errors > 0 {
        return Err(Failure::Refused(format!(
            "{}: {}",
            refused_count(&answer),
            describe_errors(&answer)
        )));
    }
    Ok(())
}

/// A `400` carrying per-event errors (`no_valid_events`), answered like a partial success.
fn is_no_valid_events(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"))
}

/// The event the flags describe.
fn build(args: &SendArgs) -> Result<Value, Failure> {
    let mut event = Map::new();
    for (name, value) in [
        ("type", &args.kind),
        ("service", &args.service),
        ("user_id", &args.user),
        ("message", &args.message),
    ] {
        if let Some(value) = value {
            event.insert(name.into(), Value::String(value.clone()));
        }
    }
    if !args.meta.is_empty() {
        let mut metadata = Map::new();
        for entry in &args.meta {
            let Some((key, value)) = entry.split_once('=') else {
                return Err(Failure::Usage(format!("--meta '{entry}' is not KEY=VALUE")));
            };
            let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
            metadata.insert(key.into(), value);
        }
        event.insert("metadata".into(), Value::Object(metadata));
    }
    Ok(Value::Object(event))
}

/// `accepted 2, duplicates 0, conflicts 0, rejected 1; ids: a, b`.
fn summary(answer: &Value) -> String {
    let ids: Vec<&str> = answer["ids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut line = format!(
        "accepted {}, duplicates {}, conflicts {}, rejected {}",
        answer["accepted"].as_u64().unwrap_or(0),
        answer["duplicates"].as_u64().unwrap_or(0),
        answer["conflicts"].as_u64().unwrap_or(0),
        rejected(answer),
    );
    match ids.len() {
        0 => {}
        1 => line.push_str(&format!("; id {}", ids[0])),
        n if n <= 5 => line.push_str(&format!("; ids {}", ids.join(", "))),
        n => line.push_str(&format!("; ids {} … {} ({n})", ids[0], ids[n - 1])),
    }
    line
}

/// Events the answer refused: those without an id.
fn rejected(answer: &Value) -> usize {
    answer["ids"]
        .as_array()
        .map_or(0, |ids| ids.iter().filter(|id| id.is_null()).count())
}

fn refused_count(answer: &Value) -> String {
    let n = rejected(answer);
    format!("{n} event{} refused", if n == 1 { "" } else { "s" })
}

/// `event 2: colour: unknown field; event 2: type: must not be blank`.
fn describe_errors(answer: &Value) -> String {
    answer["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|error| {
                    format!(
                        "event {}: {}: {}",
                        error["index"],
                        error["field"].as_str().unwrap_or(""),
                        error["message"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summaries_and_errors_fit_on_a_line() {
        let answer = json!({"accepted": 1, "duplicates": 0, "conflicts": 0,
            "ids": ["a", null], "errors": [{"index": 1, "field": "colour", "message": "unknown field"}]});
        assert_eq!(
            summary(&answer),
            "accepted 1, duplicates 0, conflicts 0, rejected 1; id a"
        );
        assert_eq!(describe_errors(&answer), "event 1: colour: unknown field");
    }
}
