#include "agent/net/listener.h"

#include <gtest/gtest.h>

#include <asio/experimental/as_tuple.hpp>
#include <atomic>
#include <memory>
#include <string>

#include "agent/net/worker_pool.h"

namespace sluice::agent::net {
namespace {

// A session that answers each line with the line, then waits for the next; counts itself.
struct Counter {
  std::atomic<int> started{0};
  std::atomic<int> destroyed{0};
};

struct Alive {
  explicit Alive(std::shared_ptr<Counter> c) : counter(std::move(c)) { ++counter->started; }
  ~Alive() { ++counter->destroyed; }
  std::shared_ptr<Counter> counter;
};

asio::awaitable<void> Echo(std::shared_ptr<Counter> counter, asio::ip::tcp::socket socket) {
  Alive alive(counter);
  std::string buffer;
  while (true) {
    auto [ec, n] =
        co_await asio::async_read_until(socket, asio::dynamic_buffer(buffer), '\n',
                                        asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    auto [wec, written] = co_await asio::async_write(
        socket, asio::buffer(buffer.data(), n), asio::experimental::as_tuple(asio::use_awaitable));
    if (wec) co_return;
    buffer.erase(0, n);
  }
}

std::string RoundTrip(asio::ip::tcp::socket& s, const std::string& line) {
  asio::write(s, asio::buffer(line + "\n"));
  std::string got;
  asio::read_until(s, asio::dynamic_buffer(got), '\n');
  return got;
}

TEST(NetListener, TwoListenersShareOnePoolAndSessionsOutliveTheirListener) {
  auto counter = std::make_shared<Counter>();
  WorkerPool pool(WorkerPool::Options{2, false});
  Listener::SessionFactory echo = [counter](asio::ip::tcp::socket s) {
    return Echo(counter, std::move(s));
  };
  auto a = std::make_unique<Listener>("A", &pool, echo);
  Listener b("B", &pool, echo);
  auto port_a = a->Start("127.0.0.1:0");
  auto port_b = b.Start("127.0.0.1:0");
  ASSERT_TRUE(port_a.ok()) << port_a.status();
  ASSERT_TRUE(port_b.ok()) << port_b.status();

  asio::io_context client;
  std::vector<asio::ip::tcp::socket> sockets;
  for (int i = 0; i < 4; ++i) {
    sockets.emplace_back(client);
    const int port = i % 2 == 0 ? *port_a : *port_b;
    sockets.back().connect({asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)});
    EXPECT_EQ(RoundTrip(sockets.back(), "hello " + std::to_string(i)),
              "hello " + std::to_string(i) + "\n");
  }
  EXPECT_EQ(counter->started.load(), 4);
  // Both listeners' sessions are spread over the one pool's two workers.
  EXPECT_EQ(pool.placement().live(0) + pool.placement().live(1), 4u);
  EXPECT_EQ(pool.placement().live(0), 2u);

  // A listener stopped and gone: its port refuses, its sessions go on.
  a->Stop();
  a.reset();
  asio::ip::tcp::socket late(client);
  asio::error_code ec;
  late.connect({asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(*port_a)}, ec);
  EXPECT_TRUE(ec) << "the stopped port still accepts";
  EXPECT_EQ(RoundTrip(sockets[0], "still there"), "still there\n");

  // The pool's stop ends every session (their frames are destroyed with the loops).
  b.Stop();
  pool.Stop();
  EXPECT_EQ(counter->destroyed.load(), 4);
}

TEST(NetListener, ABadAddressOrABusyPortIsNamed) {
  WorkerPool pool(WorkerPool::Options{1, false});
  auto never = [](asio::ip::tcp::socket) -> asio::awaitable<void> { co_return; };
  Listener first("PostgreSQL", &pool, never);
  auto port = first.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok());
  Listener second("PostgreSQL", &pool, never);
  auto busy = second.Start("127.0.0.1:" + std::to_string(*port));
  ASSERT_FALSE(busy.ok());
  EXPECT_NE(busy.status().message().find("cannot listen on 127.0.0.1:" + std::to_string(*port)),
            std::string::npos)
      << busy.status();
  Listener third("PostgreSQL", &pool, never);
  auto bad = third.Start("not-an-address:5432");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("PostgreSQL listen address 'not-an-address'"),
            std::string::npos)
      << bad.status();
}

}  // namespace
}  // namespace sluice::agent::net
