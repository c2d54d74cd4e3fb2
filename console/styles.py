"""The console's stylesheet (Textual CSS), kept in Python so an installed package carries it."""

CSS = """
/* beast console. Two columns from 100 columns up, one scrolling column below. */

#header {
    dock: top;
    height: 1;
    background: $boost;
}

#grid {
    height: 1fr;
}

Screen.-wide #grid {
    layout: grid;
    grid-size: 2 3;
    grid-rows: 1fr 1fr 7;
    grid-columns: 1fr 1fr;
}

Screen.-narrow #grid {
    layout: vertical;
    overflow-y: auto;
}

Pane {
    border: round $primary-darken-2;
    border-title-color: $text;
    height: 1fr;
}

Pane:focus-within, MetricsPane:focus {
    border: round $accent;
}

Screen.-narrow Pane { height: auto; min-height: 5; max-height: 12; }
Screen.-narrow DeploymentsPane { height: 8; }
Screen.-narrow MetricsPane { height: 8; }
Screen.-narrow JobsPane { height: 6; }

Pane DataTable {
    height: 1fr;
    scrollbar-size-vertical: 1;
}

Screen.-narrow Pane DataTable { height: auto; max-height: 8; }

.metric-row { height: 1; }
.metric-name { width: 6; }
.metric-spark { width: 1fr; height: 1; min-width: 8; }
.metric-value { width: 34; padding-left: 1; }
#metrics-empty { height: 1; color: $text-muted; }

#ab-verdict { width: 1fr; height: auto; padding: 0 1; }

#actions {
    border: round $primary-darken-2;
    height: 1fr;
}

Screen.-narrow #actions { height: 5; }

/* A maximized pane fills the screen between the header and the keys, at any width. */
Screen Pane.-maximized { height: 1fr; max-height: 100%; }
Screen Pane.-maximized DataTable { height: 1fr; max-height: 100%; }

#filter { display: none; dock: bottom; margin-bottom: 1; }

ConfirmScreen, DeployForm {
    align: center middle;
}

#dialog {
    width: 72;
    max-width: 95%;
    height: auto;
    border: thick $error;
    background: $surface;
    padding: 0 1;
}

DeployForm #dialog { border: thick $warning; }

#dialog-changes { margin: 1 0; text-style: bold; }
#dialog-context { color: $text-muted; }
#dialog-buttons { height: auto; align: right middle; margin-top: 1; }
#dialog-buttons Button { margin-left: 2; }
#form-error { height: auto; }

HelpScreen { align: center middle; }
#help {
    width: 76;
    max-width: 95%;
    height: auto;
    max-height: 95%;
    border: round $accent;
    background: $surface;
    padding: 0 1;
}

#details { padding: 0 1; }
.details-section { margin-bottom: 1; }
"""
