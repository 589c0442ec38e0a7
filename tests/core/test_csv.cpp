#include <gtest/gtest.h>

#include "util/csv.h"
#include "util/error.h"

using guardkit::parse_csv;

TEST(Csv, QuotedFieldsNewlinesAndDoubledQuotes) {
  auto rows = parse_csv("goal,target\r\n\"a, b\",\"say \"\"hi\"\"\nthere\"\nplain,x\n", "t.csv");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1][0], "a, b");
  EXPECT_EQ(rows[1][1], "say \"hi\"\nthere");
  EXPECT_EQ(rows[2], (guardkit::CsvRow{"plain", "x"}));
}

TEST(Csv, EmptyFieldsBomAndNoTrailingNewline) {
  auto rows = parse_csv("\xEF\xBB\xBF" "a,,c\n\n,\nlast,1", "t.csv");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (guardkit::CsvRow{"a", "", "c"}));
  EXPECT_EQ(rows[1], (guardkit::CsvRow{"", ""}));
  EXPECT_EQ(rows[2], (guardkit::CsvRow{"last", "1"}));
}

TEST(Csv, UnterminatedQuoteNamesTheLine) {
  try {
    parse_csv("a,b\nok,1\n\"broken,2\nmore\n", "bad.csv");
    FAIL() << "expected an error";
  } catch (const guardkit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.csv:3"), std::string::npos) << e.what();
  }
}
