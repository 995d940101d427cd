"""Streaming demo: a manifold (one plugin, several models) whose models
stream a sentence word by word. "slow" waits 50 ms between words, "fast"
does not. The pipe is a plain generator: the plugin host iterates it in a
worker thread and sends each word as it is produced."""

import time

SENTENCE = "The quick brown fox jumps over the lazy dog."
SLOW_DELAY_SECONDS = 0.05


class Pipe:
    def __init__(self):
        # Open WebUI shows a manifold's name before each model's name.
        self.name = "Streaming demo: "

    def pipes(self):
        return [{"id": "slow", "name": "slow"}, {"id": "fast", "name": "fast"}]

    def pipe(self, body: dict):
        # The model arrives as "<plugin id>.<pipe id>", as in Open WebUI.
        slow = body.get("model", "").rsplit(".", 1)[-1] == "slow"
        for i, word in enumerate(SENTENCE.split()):
            if i:
                if slow:
                    time.sleep(SLOW_DELAY_SECONDS)
                word = " " + word
            yield word
