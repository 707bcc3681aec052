"""``make bench``: throughput, latency and memory of Ledgerflow's processes on the local stack.

Every run gets its own PostgreSQL schema (database ``ledgerflow_bench``) and Kafka topic prefix,
both removed at the end. The measured components run as real ``ledgerflow`` processes so that
their peak RSS can be sampled; raw aiokafka produce and consume rates on the same broker, with
messages of the same size, are measured in the same run as the baseline each stage is compared to.
"""
