//! The event loop: one `select!` over terminal events, snapshots from the poller and
//! the answers of incident switches; one `match` from keys to [`Action`]s.
//!
//! The loop only ever draws from the model it holds. Polling and switching happen in
//! tasks of their own and report back over channels, so a slow or dead endpoint
//! never freezes the screen or the keys.

use crate::config::Config;
use crate::model::{INCIDENT_KEYS, Level, Model, ModelConfig};
use crate::poll::{self, Snapshot};
use crate::{text, ui};
use futures::StreamExt;
use phase3_observability::incidents::Status;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{
    Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    ToggleHelp,
    /// Switch this incident to the other state.
    Switch(&'static str),
}

/// The one place keys are mapped.
pub fn action_for(key: KeyEvent) -> Option<Action> {
    if key.kind != KeyEventKind::Press {
        return None;
    }
    match key.code {
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Some(Action::Quit),
        KeyCode::Char('q') | KeyCode::Esc => Some(Action::Quit),
        KeyCode::Char('?') | KeyCode::Char('h') => Some(Action::ToggleHelp),
        KeyCode::Char(c) => INCIDENT_KEYS
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, name)| Action::Switch(name)),
        _ => None,
    }
}

/// How the model is set up for `config`.
pub fn model_config(config: &Config) -> ModelConfig {
    ModelConfig {
        window: config.window,
        // A rate needs at least two scrapes in its span.
        rate_span: Duration::from_secs(10).max(config.refresh * 3),
        lag_threshold: config.lag_threshold,
        ..ModelConfig::default()
    }
}

/// `--once`: two polls `refresh` apart (a rate needs two), rendered as text.
pub async fn once(config: &Config) -> String {
    let client = poll::client(config.timeout);
    let mut model = Model::new(model_config(config));
    model.apply(&poll::poll_once(&client, &config.targets).await);
    tokio::time::sleep(config.refresh).await;
    model.apply(&poll::poll_once(&client, &config.targets).await);
    text::render(&model)
}

/// The answer to a switch, back from its task.
#[derive(Debug)]
struct Switched {
    name: &'static str,
    on: bool,
    target: String,
    result: Result<Status, String>,
}

/// The interactive dashboard, until a quit key. Restores the terminal on the way
/// out, and on a panic (`ratatui::init` installs a hook that does).
pub async fn run(config: Config) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("stdout is not a terminal: use --once for a plain-text snapshot");
    }
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(err) => {
            ratatui::restore();
            anyhow::bail!(
                "cannot set up the terminal ({err}): use --once for a plain-text snapshot"
            );
        }
    };
    let result = App::new(config).run(&mut terminal).await;
    ratatui::restore();
    result
}

/// The state of the interactive dashboard.
#[derive(Debug)]
pub struct App {
    config: Config,
    model: Model,
    view: ui::View,
    client: reqwest::Client,
}

impl App {
    pub fn new(config: Config) -> App {
        App {
            model: Model::new(model_config(&config)),
            view: ui::View {
                help: false,
                refresh: config.refresh,
            },
            client: poll::client(config.timeout),
            config,
        }
    }

    async fn run(mut self, terminal: &mut DefaultTerminal) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        // Dropping the guard stops the poller however this function ends.
        let _stop = stop.clone().drop_guard();
        let (snapshots_tx, mut snapshots) = mpsc::channel::<Snapshot>(2);
        let poll_now = Arc::new(Notify::new());
        tokio::spawn(poll::run(
            self.client.clone(),
            self.config.targets.clone(),
            self.config.refresh,
            poll_now.clone(),
            snapshots_tx,
            stop.clone(),
        ));
        let (switched_tx, mut switched) = mpsc::unbounded_channel::<Switched>();
        let mut keys = EventStream::new();
        loop {
            terminal.draw(|frame| ui::render(frame, &self.model, &self.view))?;
            tokio::select! {
                Some(snapshot) = snapshots.recv() => self.model.apply(&snapshot),
                Some(done) = switched.recv() => {
                    self.on_switched(done);
                    // Show the new state now rather than at the next refresh.
                    poll_now.notify_one();
                }
                event = keys.next() => match event {
                    Some(Ok(Event::Key(key))) => match action_for(key) {
                        Some(Action::Quit) => return Ok(()),
                        Some(Action::ToggleHelp) => self.view.help = !self.view.help,
                        Some(Action::Switch(name)) => self.switch(name, &switched_tx),
                        None => {}
                    },
                    Some(Ok(_)) => {} // resize, mouse, focus: just redraw
                    Some(Err(err)) => return Err(err.into()),
                    None => return Ok(()),
                },
            }
        }
    }

    /// Sends the switch for `name` to the target that reported it, in a task.
    fn switch(&mut self, name: &'static str, done: &mpsc::UnboundedSender<Switched>) {
        let at = chrono::Utc::now();
        let Some(incident) = self.model.incident(name) else {
            self.model.note(
                at,
                Level::Bad,
                format!("no target reports incident {name}: is its process up?"),
            );
            return;
        };
        let Some(target) = self
            .config
            .targets
            .iter()
            .find(|t| t.name == incident.target)
            .cloned()
        else {
            return;
        };
        let on = !incident.active;
        let verb = if on { "PUT" } else { "DELETE" };
        self.model.note(
            at,
            Level::Info,
            format!("key: {verb} {}/admin/incidents/{name}", target.url),
        );
        let client = self.client.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let result = poll::switch_incident(&client, &target, name, on).await;
            let _ = done.send(Switched {
                name,
                on,
                target: target.name,
                result,
            });
        });
    }

    fn on_switched(&mut self, done: Switched) {
        let at = chrono::Utc::now();
        match done.result {
            // The poll that follows (at once) shows the new state and logs it.
            Ok(_) => {}
            Err(err) => self.model.note(
                at,
                Level::Bad,
                format!(
                    "switching {} {} on {} failed: {err}",
                    done.name,
                    if done.on { "on" } else { "off" },
                    done.target
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys_map_to_actions() {
        assert_eq!(action_for(press(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(action_for(press(KeyCode::Esc)), Some(Action::Quit));
        assert_eq!(
            action_for(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(action_for(press(KeyCode::Char('c'))), None);
        assert_eq!(
            action_for(press(KeyCode::Char('?'))),
            Some(Action::ToggleHelp)
        );
        assert_eq!(
            action_for(press(KeyCode::Char('h'))),
            Some(Action::ToggleHelp)
        );
        assert_eq!(
            action_for(press(KeyCode::Char('1'))),
            Some(Action::Switch("payment-slowdown"))
        );
        assert_eq!(
            action_for(press(KeyCode::Char('4'))),
            Some(Action::Switch("cpu-hot-path"))
        );
        assert_eq!(action_for(press(KeyCode::Char('9'))), None);
    }
}
