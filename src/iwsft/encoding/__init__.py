"""Text to tokens: the one tokenization every stage uses.

  chat           how a prompt becomes tokens: plainly or through the model's chat template
  sequences      (prompt, completion) -> input ids and labels, the training collator
  token_counts   how many tokens a prompt and a completion take (curation's length rule, the curated gate)
"""
