"""Zero-shot SER from LLM-written, TTS-rendered target corpora (paper 001).

What a target corpus's papers and web pages say (:mod:`.description`) -> prompts -> an LLM writes labelled
utterances as JSON, validated, deduplicated and balanced (:mod:`.generate`) -> neutral TTS speech over several
speakers (:mod:`.render`) -> text and speech SER models trained on that alone (:mod:`.models`) -> evaluated
on the unseen target and compared with the same models trained on a real source corpus (:mod:`.pipeline`).
"""
