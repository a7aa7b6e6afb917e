"""Text to tokens: the chat template and the one tokenization every stage uses."""
