#include "controlplane/store/recording_files.h"

#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>

#include "absl/base/internal/endian.h"
#include "common/audit/recording.h"
#include "common/audit/records.h"

namespace sluice::controlplane {
namespace {

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/recording_files_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

// A block as Append frames it, around `compressed`.
std::string Framed(const std::string& compressed) {
  std::string out(8, '\0');
  absl::little_endian::Store32(out.data(), static_cast<uint32_t>(compressed.size()));
  absl::little_endian::Store32(out.data() + 4, audit::Crc32(compressed));
  return out + compressed;
}

std::string Entries(const std::vector<RecordingSlice>& slices) {
  std::string raw;
  for (const RecordingSlice& s : slices) {
    char head[12];
    absl::little_endian::Store64(head, s.sequence);
    absl::little_endian::Store32(head + 8, static_cast<uint32_t>(s.data.size()));
    raw.append(head, sizeof(head));
    raw += s.data;
  }
  return raw;
}

// Appends `bytes` to `file` under `dir`; returns where they start.
RecordingBlock AppendRaw(const std::string& dir, const std::string& file,
                         const std::string& bytes) {
  const std::string path = dir + "/" + file;
  uint64_t at = std::filesystem::exists(path) ? std::filesystem::file_size(path) : 0;
  std::ofstream(path, std::ios::binary | std::ios::app) << bytes;
  return RecordingBlock{at, bytes.size()};
}

TEST(RecordingFiles, NewBlocksAreZstdAndBlocksWrittenWithZlibStillRead) {
  const std::string dir = FreshDir("formats");
  RecordingFiles files(dir);
  std::vector<RecordingSlice> one = {{7, "Q SELECT 1"}, {8, std::string(5000, 'x')}};
  std::vector<RecordingSlice> two = {{9, "second session"}};
  auto written = files.Append({&one, &two});
  ASSERT_TRUE(written.ok()) << written.status();
  ASSERT_EQ(written->second.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    auto back = files.Read(written->first, written->second[i]);
    ASSERT_TRUE(back.ok()) << back.status();
    const auto& want = i == 0 ? one : two;
    ASSERT_EQ(back->size(), want.size());
    for (size_t j = 0; j < want.size(); ++j) {
      EXPECT_EQ((*back)[j].sequence, want[j].sequence);
      EXPECT_EQ((*back)[j].data, want[j].data);
    }
  }
  // On disk, after the 8-byte header: a zstd frame.
  std::ifstream in(dir + "/" + written->first, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(absl::little_endian::Load32(bytes.data() + written->second[0].offset + 8), 0xFD2FB528u);
  EXPECT_LT(written->second[0].length, 1000u);  // compressed

  // A block written before zstd (zlib, level 1) in the same file reads as it did.
  const std::string raw = Entries(one);
  std::string zlib(compressBound(raw.size()), '\0');
  uLongf size = zlib.size();
  ASSERT_EQ(compress2(reinterpret_cast<Bytef*>(zlib.data()), &size,
                      reinterpret_cast<const Bytef*>(raw.data()), raw.size(), 1),
            Z_OK);
  zlib.resize(size);
  RecordingBlock old = AppendRaw(dir, written->first, Framed(zlib));
  auto back = files.Read(written->first, old);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[1].data, std::string(5000, 'x'));
}

TEST(RecordingFiles, SlicesTheAgentCompressedAreStoredAsTheyAre) {
  const std::string dir = FreshDir("as_is");
  RecordingFiles files(dir);
  std::string entries;
  for (int i = 0; i < 200; ++i)
    audit::AppendRecordedMessage(&entries, 'S', i, 'D', "a row of the result " + std::to_string(i));
  std::string scratch;
  const std::string frame(audit::CompressSlice(entries, &scratch));
  ASSERT_EQ(absl::little_endian::Load32(frame.data()), 0xFD2FB528u);
  // Compressed slices with a short plain one: stored as they are, after "SLRW".
  std::vector<RecordingSlice> compressed = {{1, frame}, {2, "C short"}};
  // Plain slices past the threshold beside a compressed one: compressed again as a whole.
  std::vector<RecordingSlice> mixed = {{3, frame}, {4, std::string(8000, 'y')}};
  auto written = files.Append({&compressed, &mixed});
  ASSERT_TRUE(written.ok()) << written.status();
  std::ifstream in(dir + "/" + written->first, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(bytes.substr(written->second[0].offset + 8, 4), "SLRW");
  EXPECT_EQ(absl::little_endian::Load32(bytes.data() + written->second[1].offset + 8), 0xFD2FB528u);
  EXPECT_LT(written->second[1].length, frame.size() + 1000);
  for (size_t i = 0; i < 2; ++i) {
    auto back = files.Read(written->first, written->second[i]);
    ASSERT_TRUE(back.ok()) << back.status();
    const auto& want = i == 0 ? compressed : mixed;
    ASSERT_EQ(back->size(), 2u);
    for (size_t j = 0; j < 2; ++j) {
      EXPECT_EQ((*back)[j].sequence, want[j].sequence);
      EXPECT_EQ((*back)[j].data, want[j].data);
    }
  }
  // And the slice reads back as the entries the agent recorded.
  std::string buffer;
  auto back = files.Read(written->first, written->second[0]);
  auto read = audit::SliceEntries((*back)[0].data, &buffer);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, entries);
}

TEST(RecordingFiles, ZstdBlocksThatDoNotDecodeAreReportedDamaged) {
  const std::string dir = FreshDir("damaged");
  RecordingFiles files(dir);
  std::vector<RecordingSlice> one = {{1, "something"}};
  auto written = files.Append({&one});
  ASSERT_TRUE(written.ok()) << written.status();
  const std::string raw = Entries(one);

  // A frame that does not say its size (streamed without a pledged size) is refused, not guessed.
  ZSTD_CCtx* c = ZSTD_createCCtx();
  std::string frame(ZSTD_compressBound(raw.size()) + 64, '\0');
  ZSTD_inBuffer input{raw.data(), raw.size(), 0};
  ZSTD_outBuffer output{frame.data(), frame.size(), 0};
  ASSERT_FALSE(ZSTD_isError(ZSTD_compressStream2(c, &output, &input, ZSTD_e_continue)));
  ZSTD_inBuffer none{nullptr, 0, 0};
  ASSERT_EQ(ZSTD_compressStream2(c, &output, &none, ZSTD_e_end), 0u);
  ZSTD_freeCCtx(c);
  frame.resize(output.pos);
  RecordingBlock unsized = AppendRaw(dir, written->first, Framed(frame));
  auto r = files.Read(written->first, unsized);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("not a zstd frame with its size"), std::string::npos)
      << r.status();

  // A block whose content was changed (and the block's CRC made to match) fails the frame's own
  // content checksum.
  std::ifstream in(dir + "/" + written->first, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string sized = bytes.substr(written->second[0].offset + 8, written->second[0].length - 8);
  const size_t at = sized.find("something");
  ASSERT_NE(at, std::string::npos);  // stored as is: too short to compress
  sized[at] = 'S';
  RecordingBlock changed = AppendRaw(dir, written->first, Framed(sized));
  r = files.Read(written->first, changed);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace sluice::controlplane
