// A low-overhead load generator for posefleet.v1.PoseNode/EstimateStream, used by `posefleet bench --node`.
//
// The node benchmark runs the load generator on the same cores as the node; gRPC Python costs about
// 0.3 ms of CPU per frame on the client side, which this C++ client (gRPC callback API, generic stub,
// pre-serialized frames) mostly saves, so the node gets the machine as it would with a remote camera.
//
// Usage: estimate_stream_load ADDRESS FRAME_FILE MAX_FRAMES SECONDS WINDOW REPLIES_FILE
//   FRAME_FILE    a serialized posefleet.v1.Frame without a sequence number; each frame sent is this
//                 template followed by field 2 (sequence, varint): protobuf merges concatenated fields.
//   WINDOW        frames outstanding at most (the node's capacity).
//   REPLIES_FILE  every reply, as a little-endian uint32 length and the serialized PoseResult; the
//                 Python side parses and checks them after the clock has stopped.
// Prints one JSON line: {"sent": N, "received": M, "seconds": S, "code": C, "message": "..."}.

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr char kMethod[] = "/posefleet.v1.PoseNode/EstimateStream";
constexpr unsigned char kSequenceTag = (2 << 3) | 0;  // field 2, wire type varint

std::string WithSequence(const std::string& frame, uint64_t sequence) {
  std::string out = frame;
  out.push_back(static_cast<char>(kSequenceTag));
  do {
    unsigned char byte = sequence & 0x7f;
    sequence >>= 7;
    out.push_back(static_cast<char>(sequence ? byte | 0x80 : byte));
  } while (sequence);
  return out;
}

class Load : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  Load(std::string frame, uint64_t max_frames, double seconds, int window)
      : frame_(std::move(frame)), max_frames_(max_frames), credits_(window),
        deadline_(Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds))) {}

  void Run(grpc::TemplatedGenericStub<grpc::ByteBuffer, grpc::ByteBuffer>* stub) {
    stub->PrepareBidiStreamingCall(&context_, kMethod, grpc::StubOptions(), this);
    start_ = Clock::now();
    StartRead(&reply_);
    Next();
    StartCall();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) closed_ = true;
    }
    Next();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    std::vector<grpc::Slice> slices;
    std::string data;
    if (reply_.Dump(&slices).ok()) {
      for (const auto& s : slices) data.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      replies_.push_back(std::move(data));
      last_reply_ = Clock::now();
      ++credits_;
    }
    StartRead(&reply_);
    Next();
  }

  void OnDone(const grpc::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    done_ = true;
    cv_.notify_all();
  }

  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
  }

  bool Ok() const { return status_.ok(); }

  void Report(const std::string& path) {
    std::ofstream out(path, std::ios::binary);
    for (const auto& r : replies_) {
      uint32_t n = static_cast<uint32_t>(r.size());
      unsigned char len[4] = {static_cast<unsigned char>(n), static_cast<unsigned char>(n >> 8),
                              static_cast<unsigned char>(n >> 16), static_cast<unsigned char>(n >> 24)};
      out.write(reinterpret_cast<const char*>(len), 4);
      out.write(r.data(), static_cast<std::streamsize>(r.size()));
    }
    double seconds = std::chrono::duration<double>(last_reply_ - start_).count();
    std::string message = status_.error_message();
    for (auto& c : message) {
      if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) c = ' ';
    }
    std::printf("{\"sent\": %llu, \"received\": %zu, \"seconds\": %.6f, \"code\": %d, \"message\": \"%s\"}\n",
                static_cast<unsigned long long>(sent_), replies_.size(), seconds,
                static_cast<int>(status_.error_code()), message.c_str());
  }

 private:
  // Decide under the lock, act outside it: at most one write in flight, one credit per frame.
  void Next() {
    bool write = false, finish = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (writing_ || finished_ || closed_) return;
      if (sent_ >= max_frames_ || Clock::now() >= deadline_) {
        finished_ = finish = true;
      } else if (credits_ > 0) {
        --credits_;
        writing_ = write = true;
        std::string bytes = WithSequence(frame_, sent_++);
        grpc::Slice slice(bytes);
        request_ = grpc::ByteBuffer(&slice, 1);
      }
    }
    if (write) StartWrite(&request_);
    if (finish) StartWritesDone();
  }

  grpc::ClientContext context_;
  std::string frame_;
  uint64_t max_frames_;
  int credits_;
  Clock::time_point deadline_, start_, last_reply_;
  grpc::ByteBuffer request_, reply_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool writing_ = false, finished_ = false, closed_ = false, done_ = false;
  uint64_t sent_ = 0;
  std::vector<std::string> replies_;
  grpc::Status status_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    std::cerr << "usage: " << argv[0] << " ADDRESS FRAME_FILE MAX_FRAMES SECONDS WINDOW REPLIES_FILE\n";
    return 2;
  }
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::cerr << argv[0] << ": cannot read " << argv[2] << "\n";
    return 2;
  }
  std::string frame((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(64 << 20);
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(argv[1], grpc::InsecureChannelCredentials(), args);
  grpc::TemplatedGenericStub<grpc::ByteBuffer, grpc::ByteBuffer> stub(channel);
  Load load(frame, std::strtoull(argv[3], nullptr, 10), std::strtod(argv[4], nullptr), std::atoi(argv[5]));
  load.Run(&stub);
  load.Wait();
  load.Report(argv[6]);
  return load.Ok() ? 0 : 1;
}
