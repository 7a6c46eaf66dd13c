//! What a [`LocalRoom`] that keeps its lines on disk (`serve --data`) does
//! besides queueing them: its channels, which share its store and writer;
//! a newcomer's history and the answers to `/history` and `/search`, read
//! from its own channel's lines; and how leaves and operators' actions are
//! stored.

use super::{LocalRoom, Numbered, State, Waiter};
use crate::protocol;
use crate::room::history::History;
use crate::room::recall::{self, Asked};
use crate::room::store::{Action, Entry, Kind};
use crate::room::{Departure, Moderation, Question};
use crate::sync::lock;
use anyhow::Context;
use bytes::Bytes;
use std::sync::Arc;

impl LocalRoom {
    /// A room like this one (its limits, its [`Announce`](crate::room::Announce)
    /// and history settings) for the channel `name`. With a store, the
    /// channel keeps its lines in it, through the same writer, and its
    /// newcomers get its own history from it: so a channel forgotten once
    /// empty and opened again, even after a restart, has its lines back.
    pub(super) fn channel_room(&self, name: &str) -> anyhow::Result<LocalRoom> {
        let (announce, history_lines) = {
            let state = self.state();
            (state.announce, state.history_lines)
        };
        let mut room = LocalRoom::new(self.shared.max_members, self.shared.channel_backlog)
            .with_announce(announce)
            .with_history(history_lines)
            .with_channel(name)?;
        if let Some(journal) = &self.shared.journal {
            let shared = Arc::get_mut(&mut room.shared).context("the room is shared already")?;
            // Its history is read from the store.
            let state: &mut State = shared.state.get_mut().unwrap_or_else(|e| e.into_inner());
            state.history = History::new(0);
            shared.journal = Some(journal.clone());
            shared.reading = self.shared.reading.clone();
        }
        Ok(room)
    }

    /// The history a newcomer whose `joined!` is line `start` gets: this
    /// channel's stored lines before it and, in the room itself, how long
    /// the room keeps them (said once: a channel's newcomer was told on
    /// joining the room); and the sequence of the oldest line in it
    /// (`start` if none).
    pub(super) async fn stored_history(&self, start: u64) -> (Arc<[Bytes]>, u64) {
        let Some(reading) = &self.shared.reading else {
            return (Arc::from([]), start);
        };
        let (reader, n) = (reading.reader.clone(), reading.history);
        let channel = self.shared.channel.clone();
        let read =
            tokio::task::spawn_blocking(move || lock(&reader).recent(&channel, Some(start), n));
        let channel = &self.shared.channel;
        let mut oldest = start;
        let mut lines: Vec<Bytes> = match read.await {
            Ok(Ok(entries)) => {
                oldest = entries.first().map_or(start, |e| e.seq);
                entries
                    .iter()
                    .map(|e| protocol::history_line(&e.line_in(channel)))
                    .collect()
            }
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), "cannot read the room's history");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the room's history");
                Vec::new()
            }
        };
        if self.shared.prefix.is_none() {
            lines.push(protocol::retention_line(reading.retain));
        }
        (Arc::from(lines), oldest)
    }

    /// [`Room::ask`](crate::room::Room::ask): answered from this channel's
    /// stored lines alone.
    pub(super) fn ask_store(&self, nick: &str, question: Question<'_>) {
        let Some(reading) = &self.shared.reading else {
            return;
        };
        let key = protocol::nick_key(nick);
        let asked = match question {
            Question::History(n) => {
                let Some(&before) = self.state().shown.get(&key) else {
                    return;
                };
                Asked::History { n, before }
            }
            Question::Search(words) => Asked::Search(words.to_owned()),
        };
        let (shared, reader) = (self.shared.clone(), reading.reader.clone());
        tokio::task::spawn_blocking(move || {
            let (lines, oldest) = recall::answer_in(&reader, &shared.channel, &asked);
            let mut state = lock(&shared.state);
            if let Some(oldest) = oldest
                && let Some(shown) = state.shown.get_mut(&key)
            {
                *shown = (*shown).min(oldest);
            }
            if let Some(asker) = state.members.get(&key) {
                // A participant that lets its mailbox fill is not reading:
                // the rest of its answer is not kept for it.
                for chunk in recall::chunks(lines) {
                    if !asker.value.put(0, chunk) {
                        break;
                    }
                }
            }
        });
    }

    /// What is stored of `nick`'s leave: a leave, with its `/quit`
    /// reason; or, put out by an operator, the operator's action.
    pub(super) fn departure_entry(&self, nick: &str, how: Departure<'_>) -> Entry {
        match how {
            Departure::Kicked { by, reason, ban } => {
                let action = if ban { Action::Ban } else { Action::Kick };
                let mut entry = self.entry(Kind::Moderation(action), by, reason.unwrap_or(""));
                entry.whom = nick.to_owned();
                entry
            }
            Departure::Left | Departure::Quit(_) => self.entry(Kind::Leave, nick, &how.text()),
        }
    }

    /// [`Room::moderated`](crate::room::Room::moderated): `line` (if any)
    /// in the ring after the lines said before it, and with a store, `act`
    /// stored as a line of its own, `line` delivered once it is committed.
    pub(super) fn moderate(&self, line: Option<Bytes>, act: Moderation<'_>) {
        let mut state = self.state();
        if state.closed {
            return;
        }
        let Some(journal) = &self.shared.journal else {
            if let Some(bytes) = line {
                state.lines.push(Numbered { seq: 0, bytes });
            }
            return;
        };
        let mut entry = self.entry(Kind::Moderation(act.action), act.by, act.detail);
        entry.whom = act.whom.to_owned();
        self.queue(journal, &mut state, line, entry, Waiter::Nobody);
    }
}
