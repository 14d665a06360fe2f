"""The pepr dashboard: a Streamlit what-if explorer of PePR scores (run `make dashboard`)."""
