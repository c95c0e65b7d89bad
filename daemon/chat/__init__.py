"""People in chat: the inbound hub, conversations with the agent, access, pairing, approvals."""
