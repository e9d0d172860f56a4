#include "common/html.h"

#include <gtest/gtest.h>

#include <string>

namespace sluice {
namespace {

TEST(HtmlEscape, WritesTheFiveSpecialCharactersAsReferences) {
  EXPECT_EQ(HtmlEscape(R"(<a href="x" title='y'>&</a>)"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;");
}

TEST(HtmlEscape, CopiesEverythingElse) {
  EXPECT_EQ(HtmlEscape(""), "");
  EXPECT_EQ(HtmlEscape("plain text, é ✓ 😀; a\tb\nc"), "plain text, é ✓ 😀; a\tb\nc");
  const std::string bytes = std::string("nul") + '\0' + "\xff\xfe";
  EXPECT_EQ(HtmlEscape(bytes), bytes);
}

TEST(HtmlEscape, EscapesAnAlreadyEscapedTextAgain) {
  // Not idempotent on purpose: a reference in the input is text to show, not markup.
  EXPECT_EQ(HtmlEscape("&amp;"), "&amp;amp;");
  EXPECT_EQ(HtmlEscape("<script>alert('x')</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
}

}  // namespace
}  // namespace sluice
