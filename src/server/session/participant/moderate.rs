//! An operator's commands (`/kick`, `/ban`, `/mute`, `/unmute`, `/topic`):
//! each checked against the access policy in force now, answered to the
//! operator, told to whom it concerns, and logged under the target
//! `audit`.

use super::Participant;
use crate::protocol::moderation::{self, MAX_TOPIC, NOT_AN_OPERATOR};
use crate::protocol::{self, Command};
use crate::room::store::Action;
use crate::room::{Departure, Moderation, Mute, Room};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

impl<S, R> Participant<'_, S, R>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Room,
{
    /// Acts on an operator's command; returns the answer to the asker.
    /// Boxed by its caller, as a join is: a kick may wait for another
    /// node's answer, and would otherwise make every session's future
    /// that much larger.
    pub(super) async fn moderate(&mut self, command: Command<'_>) -> Bytes {
        let access = self.server.access;
        if !access.is_some_and(|access| access.is_operator(self.nick)) {
            return protocol::error_line(NOT_AN_OPERATOR);
        }
        let is_operator = |nick: &str| access.is_some_and(|access| access.is_operator(nick));
        match command {
            Command::Kick { nick, .. } | Command::Mute { nick, .. } if is_operator(nick) => {
                protocol::error_line(moderation::OPERATOR_PROTECTED)
            }
            Command::Kick { nick, reason, ban } => self.kick(nick, reason.as_deref(), ban).await,
            Command::Mute {
                nick,
                duration,
                typed,
            } => self.mute(&protocol::sanitize(nick), duration, typed),
            Command::Unmute(nick) => self.unmute(&protocol::sanitize(nick)),
            Command::Topic(topic) if topic.len() > MAX_TOPIC => {
                protocol::error_line(format!("a topic is at most {MAX_TOPIC} bytes"))
            }
            Command::Topic(topic) => {
                let channel = self.subscription.current_channel();
                let set = self.server.channels.set_topic(channel, &topic, self.nick);
                let channel = self.subscription.current_name();
                match set {
                    Ok(()) => {
                        self.audit(Action::Topic, channel, Some(&topic));
                        protocol::control_line(&format!("[topic] set for {channel}"))
                    }
                    Err(why) => unavailable("/topic", why),
                }
            }
            _ => protocol::error_line("unknown command"),
        }
    }

    /// `/mute`: kept by the room, if it keeps mutes (shared with other
    /// servers), or else by this server; told to NICK's current channel.
    fn mute(&self, nick: &str, duration: std::time::Duration, typed: &str) -> Bytes {
        let now = time::OffsetDateTime::now_utc();
        let until = now + duration;
        let by = self.nick;
        let mute = Mute {
            nick,
            by,
            until,
            typed,
        };
        let until = match self.server.room.mute(mute) {
            Some(Err(why)) => return unavailable("/mute", why),
            Some(Ok(())) => until,
            None => {
                let line = moderation::muted_line(nick, by, typed);
                let act = self.act(Action::Mute, nick, typed);
                if let Err(why) = self.server.channels.notice_about(nick, &line, act) {
                    return unavailable("/mute", why);
                }
                self.server.moderation.mute(nick, duration)
            }
        };
        self.audit(Action::Mute, nick, Some(typed));
        let until = moderation::until_text(until, now);
        protocol::control_line(&format!("[mute] {nick} is muted until {until}"))
    }

    /// `/unmute`, where `/mute` keeps its mutes.
    fn unmute(&self, nick: &str) -> Bytes {
        let by = self.nick;
        let lifted = match self.server.room.unmute(nick, by) {
            Some(Err(why)) => return unavailable("/unmute", why),
            Some(Ok(lifted)) => lifted,
            None => {
                let lifted = self.server.moderation.unmute(nick);
                if lifted {
                    let line = moderation::unmuted_line(nick, by);
                    let act = self.act(Action::Unmute, nick, "");
                    let _ = self.server.channels.notice_about(nick, &line, act);
                }
                lifted
            }
        };
        if !lifted {
            return protocol::error_line(format!("\"{nick}\" is not muted"));
        }
        self.audit(Action::Unmute, nick, None);
        protocol::control_line(&format!("[mute] {nick} may speak again"))
    }

    /// `/kick` (and `/ban`, which first keeps the name in `--deny-file`):
    /// puts NICK out of the server, the room and every channel told.
    async fn kick(&mut self, victim: &str, reason: Option<&str>, ban: bool) -> Bytes {
        let by = self.nick;
        // Typed by the asker, and said back to it: no control character.
        let victim = &*protocol::sanitize(victim);
        let access = self.server.access;
        if ban && let Some(Err(e)) = access.map(|access| access.deny_file()) {
            return protocol::error_line(e);
        }
        // Put out first: the reload a ban makes would otherwise put it out
        // as merely denied.
        let told = moderation::kicked_error(by, reason);
        let how = Departure::Kicked { by, reason, ban };
        let action = if ban { Action::Ban } else { Action::Kick };
        let name = action.as_str();
        let answer = match self.server.channels.put_out(victim, told, how).await {
            Ok(true) => protocol::control_line(&format!("[{name}] {victim} is out")),
            // A ban holds for the next join all the same; nobody is told,
            // and it is stored all the same.
            Ok(false) if ban => {
                let act = self.act(Action::Ban, victim, reason.unwrap_or(""));
                if let Err(why) = self.server.room.moderated(None, act) {
                    return unavailable("/ban", why);
                }
                protocol::control_line(&format!("[ban] {victim} is banned"))
            }
            Ok(false) => return protocol::error_line(format!("no such nickname \"{victim}\"")),
            Err(why) => return protocol::error_line(why),
        };
        self.audit(action, victim, reason);
        if let Some(access) = access.filter(|_| ban) {
            let date = time::OffsetDateTime::now_utc().date();
            let comment = match reason {
                Some(reason) => format!("banned by {by} on {date}: {reason}"),
                None => format!("banned by {by} on {date}"),
            };
            if let Err(e) = access.ban(victim, &comment) {
                tracing::warn!(error = format!("{e:#}"), "cannot ban {victim}");
                return protocol::error_line(format!("{victim} is out, but not banned: {e:#}"));
            }
        }
        answer
    }

    /// This operator's `action` on `whom`, for a store.
    fn act<'a>(&'a self, action: Action, whom: &'a str, detail: &'a str) -> Moderation<'a> {
        Moderation {
            action,
            by: self.nick,
            whom,
            detail,
        }
    }

    /// An operator's action done: the audit log's line, and its count in
    /// the metrics.
    fn audit(&self, action: Action, whom: &str, detail: Option<&str>) {
        let action_name = action.as_str();
        tracing::info!(target: "audit", op = self.nick, action = action_name, whom, detail);
        self.server.metrics.moderated(action);
    }
}

fn unavailable(command: &str, why: &str) -> Bytes {
    protocol::error_line(format!("{command} not done: {why}"))
}
