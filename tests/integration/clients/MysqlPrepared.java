// A JDBC client for the MySQL integration tests (MariaDB Connector/J, Debian's libmariadb-java):
// runs one statement as a server-side prepared statement (useServerPrepStmts=true in the URL:
// COM_STMT_PREPARE / COM_STMT_EXECUTE, rows in the binary protocol) and prints its rows
// tab-separated, or "affected N". The caller's token comes in SLUICE_TOKEN; an error is printed
// as "ERROR <code> (<sqlstate>): <message>" with exit code 1. A parameter is bound as a string,
// or as NULL when it is \N, or typed with a prefix: int:42, dec:12.50, ts:2024-02-03 04:05:06.
//
//   java -cp mariadb-java-client.jar MysqlPrepared.java <jdbc url> <user> <sql> [params...]
import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.sql.Types;

public class MysqlPrepared {
  static void bind(PreparedStatement s, int i, String v) throws SQLException {
    if (v.equals("\\N")) {
      s.setNull(i, Types.VARCHAR);
    } else if (v.startsWith("int:")) {
      s.setLong(i, Long.parseLong(v.substring(4)));
    } else if (v.startsWith("dec:")) {
      s.setBigDecimal(i, new BigDecimal(v.substring(4)));
    } else if (v.startsWith("ts:")) {
      s.setTimestamp(i, Timestamp.valueOf(v.substring(3)));
    } else {
      s.setString(i, v);
    }
  }

  public static void main(String[] args) throws Exception {
    String token = System.getenv("SLUICE_TOKEN");
    try (Connection c = DriverManager.getConnection(args[0], args[1], token);
        PreparedStatement s = c.prepareStatement(args[2])) {
      for (int i = 3; i < args.length; i++) bind(s, i - 2, args[i]);
      // Twice: the second execution reuses the prepared statement (its id on the server).
      for (int round = 0; round < 2; round++) {
        if (s.execute()) {
          ResultSet r = s.getResultSet();
          int n = r.getMetaData().getColumnCount();
          while (r.next()) {
            StringBuilder b = new StringBuilder();
            for (int i = 1; i <= n; i++) {
              if (i > 1) b.append('\t');
              b.append(r.getString(i));
            }
            System.out.println(b);
          }
        } else {
          System.out.println("affected " + s.getUpdateCount());
        }
      }
    } catch (SQLException e) {
      System.err.println(
          "ERROR " + e.getErrorCode() + " (" + e.getSQLState() + "): " + e.getMessage());
      System.exit(1);
    }
  }
}
