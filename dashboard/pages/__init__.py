"""The dashboard's pages: each module has `render(view)`; app.py routes them with st.navigation."""
