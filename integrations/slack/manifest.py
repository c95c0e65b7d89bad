"""The Slack app manifest nightshift needs (``nightshift slack manifest`` prints it).

Paste it at https://api.slack.com/apps → Create New App → From an app manifest, install the app,
then create an app-level token with ``connections:write`` (``channels.slack.app_token``) and copy
the bot token (``channels.slack.bot_token``).
"""

from __future__ import annotations

__all__ = ["BOT_EVENTS", "BOT_SCOPES", "slack_manifest"]

BOT_SCOPES = (
    "app_mentions:read",  # @nightshift in channels
    "channels:history",  # replies in threads we take part in (public channels)
    "groups:history",  # the same in private channels
    "im:history",  # direct messages
    "chat:write",  # post, edit, approval prompts
    "users:read",  # show who wrote (users.info)
)
BOT_EVENTS = ("app_mention", "message.im", "message.channels", "message.groups")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def slack_manifest(name: str = "nightshift") -> str:
    """The app manifest as YAML: Socket Mode, bot events, interactivity, bot scopes."""
    scopes = "\n".join(f"      - {scope}" for scope in BOT_SCOPES)
    events = "\n".join(f"      - {event}" for event in BOT_EVENTS)
    return f"""\
display_information:
  name: {_quote(name)}
  description: "An always-on ops agent for this host"
features:
  app_home:
    home_tab_enabled: false
    messages_tab_enabled: true
    messages_tab_read_only_enabled: false
  bot_user:
    display_name: {_quote(name)}
    always_online: true
oauth_config:
  scopes:
    bot:
{scopes}
settings:
  event_subscriptions:
    bot_events:
{events}
  interactivity:
    is_enabled: true
  org_deploy_enabled: false
  socket_mode_enabled: true
  token_rotation_enabled: false
"""
