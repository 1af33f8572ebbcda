from codeassist.lsp.snippets import query_lines, rank_snippets

PARSER = "\n".join(["import re", "", "def parse_header(line):", "    name, value = line.split(':', 1)",
                    "    return name.strip().lower(), value.strip()", ""] + ["# filler"] * 30)
OTHER = "\n".join(["def draw_circle(canvas, radius):", "    canvas.arc(0, 0, radius)"] + ["pass"] * 10)


def test_the_most_similar_file_comes_first_and_unrelated_ones_are_left_out() -> None:
    query = "headers = {}\nfor line in lines:\n    name, value = parse_header(line)\n"
    found = rank_snippets(query, [("draw.py", OTHER), ("http_parse.py", PARSER)], limit=4)
    assert [s.path for s in found] == ["http_parse.py"]
    assert "def parse_header(line):" in found[0].text
    assert rank_snippets(query, [("http_parse.py", PARSER)], limit=0) == ()


def test_query_is_the_lines_above_the_cursor_line() -> None:
    assert query_lines("a = 1\nb = 2\nc = parse_hea") == "a = 1\nb = 2"
    assert query_lines("no newline yet") == ""
