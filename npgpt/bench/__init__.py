"""npgpt bench: what this machine does on a GPT (placeholder, filled in below)."""
