"""The style sheet and the one script of the views' pages (inline: no extra request, no files
to install)."""

PAGE_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;font-size:14px;margin:16px;color:#1a202c}
h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:20px 0 8px}h3{font-size:14px}
table{border-collapse:collapse;margin:4px 0}td,th{border:1px solid #cbd5e0;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#edf2f7}table.facts td:first-child{font-weight:600;background:#f7fafc}
pre{background:#f7fafc;border:1px solid #cbd5e0;padding:8px;white-space:pre-wrap;word-break:break-all;margin:0}
.block{position:relative}.copy{position:absolute;top:4px;right:4px}
table.loaded code{white-space:pre}.loopname{font-weight:400;color:#4a5568;margin-left:8px}
.note{color:#4a5568}li.here{font-weight:600}li.warning{color:#975a16}li.error{color:#c53030}
.source{color:#2b6cb0}
@media (prefers-color-scheme: dark){body{background:#1a202c;color:#e2e8f0}th,table.facts td:first-child,pre
{background:#2d3748}td,th,pre{border-color:#4a5568}a{color:#90cdf4}.source{color:#90cdf4}}
"""

# Copy buttons: the text content of the element named by data-copy (never parsed as HTML).
PAGE_SCRIPT = """
document.querySelectorAll("button.copy").forEach(function (b) {
  b.addEventListener("click", function () {
    var text = document.getElementById(b.dataset.copy).textContent;
    if (navigator.clipboard) { navigator.clipboard.writeText(text); }
    b.textContent = "Copied";
  });
});
"""
