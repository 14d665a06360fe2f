"""The dashboard's pages, run by st.navigation from app.py; each reads `dashboard.sidebar.current()`."""
