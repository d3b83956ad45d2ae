//! A tiny `--key value` argument parser.

use std::collections::HashMap;
use std::str::FromStr;

/// Options of one subcommand: every option is `--key value`.
pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    /// Parses `--key value` pairs, rejecting keys not in `allowed`.
    pub fn parse(raw: &[String], allowed: &[&str]) -> Result<Args, String> {
        let mut map = HashMap::new();
        let mut it = raw.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("expected an option like --clients, got {k:?}"))?;
            let (key, value) = match key.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => {
                    let v = it
                        .next()
                        .ok_or_else(|| format!("--{key} needs a value"))?
                        .clone();
                    (key.to_string(), v)
                }
            };
            if !allowed.contains(&key.as_str()) {
                return Err(format!(
                    "unknown option --{key}; this subcommand takes: --{}",
                    allowed.join(", --")
                ));
            }
            map.insert(key, value);
        }
        Ok(Args { map })
    }

    /// A string option, if given.
    pub fn opt(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// A string option with a default.
    pub fn str_or(&self, key: &str, default: &str) -> String {
        self.opt(key).unwrap_or(default).to_string()
    }

    /// A required string option.
    pub fn required(&self, key: &str) -> Result<String, String> {
        self.opt(key)
            .map(str::to_string)
            .ok_or_else(|| format!("--{key} is required"))
    }

    /// A numeric option with a default.
    pub fn num<T: FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.opt(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: {v:?} is not a valid number")),
        }
    }

    /// An optional numeric option.
    pub fn num_opt<T: FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.opt(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--{key}: {v:?} is not a valid number")),
        }
    }
}
