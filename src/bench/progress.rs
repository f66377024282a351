//! A hand-rolled progress bar on stderr.
//!
//! On a terminal the bar is redrawn in place ten times a second; otherwise (a log file, CI)
//! a plain line is printed every two seconds, so logs stay readable.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// Width of the bar itself, in characters.
const BAR_WIDTH: usize = 30;

/// Reads the current count of finished units.
pub type Counter = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A progress bar drawn by a background task until [`Progress::finish`].
pub struct Progress {
    label: String,
    total: u64,
    counter: Counter,
    started: Instant,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
    enabled: bool,
}

impl Progress {
    /// Starts drawing `label` with `counter()` out of `total`; `enabled = false` draws
    /// nothing.
    pub fn start(label: impl Into<String>, total: u64, counter: Counter, enabled: bool) -> Self {
        let label = label.into();
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let task = enabled.then(|| {
            let (label, counter, stop) = (label.clone(), counter.clone(), stop.clone());
            tokio::spawn(async move {
                let tty = std::io::stderr().is_terminal();
                let every = if tty {
                    Duration::from_millis(100)
                } else {
                    Duration::from_secs(2)
                };
                loop {
                    tokio::time::sleep(every).await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let line = render(&label, counter(), total, started.elapsed());
                    let mut err = std::io::stderr().lock();
                    let _ = if tty {
                        write!(err, "\r\x1b[2K{line}")
                    } else {
                        writeln!(err, "{line}")
                    };
                    let _ = err.flush();
                }
            })
        });
        Self {
            label,
            total,
            counter,
            started,
            stop,
            task,
            enabled,
        }
    }

    /// Stops the bar and prints its final state on its own line.
    pub async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        if self.enabled {
            let line = render(
                &self.label,
                (self.counter)(),
                self.total,
                self.started.elapsed(),
            );
            let mut err = std::io::stderr().lock();
            let clear = if err.is_terminal() { "\r\x1b[2K" } else { "" };
            let _ = writeln!(err, "{clear}{line}");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One progress line: `label [#####-----] done/total pct rate/s elapsed`.
pub fn render(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let filled = (fraction * BAR_WIDTH as f64).round() as usize;
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    format!(
        "{label} [{}{}] {}/{} {:5.1}% {}/s {:.1}s",
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH - filled),
        group(done),
        group(total),
        fraction * 100.0,
        group(rate.round() as u64),
        secs
    )
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }

    #[test]
    fn renders_a_bar() {
        let line = render("deliveries", 500, 1000, Duration::from_secs(2));
        assert!(line.starts_with("deliveries [###############---------------] 500/1,000"));
        assert!(line.contains(" 50.0% 250/s 2.0s"));
        let done = render("x", 10, 0, Duration::ZERO);
        assert!(done.contains("100.0%"));
    }
}
