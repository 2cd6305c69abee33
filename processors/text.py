"""Text LLMs: the chat template of any causal LM; images and videos are replaced by the record's
``text_view`` (a record with visuals and no text view is rejected with MissingTextView)."""

from __future__ import annotations

from uniopd_mm.data import Sample

from .base import ModalityProcessor, PromptInputs


class Processor(ModalityProcessor):
    family = "text"
    is_multimodal = False

    def _load(self) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.chat_template is None:
            raise ValueError(f"{self.path}: the tokenizer has no chat template")

    @staticmethod
    def flatten(messages: list[dict]) -> list[dict]:
        # NOTE: many text chat templates accept only string content, so parts are joined.
        return [{"role": m["role"], "content": "".join(p["text"] for p in m["content"])} for m in messages]

    def encode_prompt(self, sample: Sample) -> PromptInputs:
        messages = self.flatten(self.messages_for(sample))
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids, text = self.fit_length(sample, ids, text, visual=False)
        return PromptInputs(sample_id=sample.id, prompt_ids=ids, text=text)
