//! Log setup: `RUST_LOG` sets the level (default `info`); `log.format` picks
//! lines for humans or one JSON object per line for log shippers. Nothing
//! here ever sees a token: no code path logs one.

use std::io::Write;

use crate::settings::LogFormat;

pub fn init(format: LogFormat) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = serde_json::json!({
                "ts": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    let _ = builder.try_init();
}
