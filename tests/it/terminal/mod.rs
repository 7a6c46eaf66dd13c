//! `chatroom connect` in a real terminal under tmux: typing while lines
//! arrive, and what the screen shows.

mod display;
mod typing;
