"""Money and tokens: offline token counts, prices, the estimate, the budget, the quota, the report.

Takes request bodies, usage figures and result datasets; gives token counts, USD figures and the
documents `estimate` and `report` print. Counts offline only (tiktoken encodings shipped or
cached, never downloaded) and never calls a price unknown to it zero. Writes under OUT only
through store; its one network call is the gateway quota, asked once per run.
"""
